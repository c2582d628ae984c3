//! `uvs demo` (to come).

/// Run the demo.
pub fn run(_hold: u64) -> Result<(), String> {
    Err("demo not built yet".into())
}
