//! IPv4 options (RFC 791 3.1), checked as a Linux router checks a received packet's
//! (`ip_options_compile`, then `ip_rcv_options` with the default `accept_source_route=0`).
//!
//! Contract: [`check`] reads the option bytes of a header (after its first 20 bytes) and
//! never panics. It refuses (`OptionFault::Malformed`) what Linux's parse refuses: an option
//! other than End/No-op without room for its length byte, a length below 2 or running past the
//! header, a Record Route, Timestamp or source route whose pointer or length is wrong for its
//! type, a second Record Route, Timestamp or source route, a Timestamp whose overflow counter
//! is full, a Router Alert shorter than 4 bytes. A well-formed loose or strict source route
//! (LSRR, SSRR) is `OptionFault::SourceRoute` (Linux drops it unless `accept_source_route`).
//! Everything else (No-op, End and the bytes after it, Record Route, Timestamp, Router Alert,
//! unknown options) passes: the router forwards such packets with their options as they are.

/// End of option list.
pub const END: u8 = 0;
/// No operation (padding).
pub const NOP: u8 = 1;
/// Record Route.
pub const RR: u8 = 7;
/// Timestamp.
pub const TIMESTAMP: u8 = 68;
/// Loose source and record route.
pub const LSRR: u8 = 131;
/// Strict source and record route.
pub const SSRR: u8 = 137;
/// Router Alert (RFC 2113).
pub const ROUTER_ALERT: u8 = 148;

/// Why [`check`] refused a header's options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionFault {
    /// The options do not parse (see the module docs).
    Malformed,
    /// A loose or strict source route.
    SourceRoute,
}

/// Check the options `opts` (the header's bytes 20 to its header length); see the module docs.
pub fn check(opts: &[u8]) -> Result<(), OptionFault> {
    use OptionFault::Malformed;
    let (mut rr, mut ts, mut srr) = (false, false, false);
    let mut rest = opts;
    while let Some(&kind) = rest.first() {
        match kind {
            // Whatever follows the end of the list is padding (Linux overwrites it with Ends).
            END => break,
            NOP => {
                rest = &rest[1..];
                continue;
            }
            _ => {}
        }
        let len = *rest.get(1).ok_or(Malformed)? as usize;
        let o = rest.get(..len).filter(|_| len >= 2).ok_or(Malformed)?;
        // The pointer (3rd byte) of RR, TS and source routes: 1-based, into the option.
        let ptr = o.get(2).map_or(0, |&p| p as usize);
        match kind {
            LSRR | SSRR => {
                if len < 3 || ptr < 4 || srr {
                    return Err(Malformed);
                }
                srr = true;
            }
            RR => {
                if rr || len < 3 || ptr < 4 || (ptr <= len && ptr + 3 > len) {
                    return Err(Malformed);
                }
                rr = true;
            }
            TIMESTAMP => {
                if ts || len < 4 || ptr < 5 {
                    return Err(Malformed);
                }
                let flags = o[3];
                let bad = if ptr <= len {
                    // Room for the next entry: 4 bytes of time, 8 with an address first.
                    let entry = if matches!(flags & 0x0f, 1 | 3) { 8 } else { 4 };
                    ptr + entry - 1 > len
                } else {
                    // Full: the overflow counter (high nibble) must not be full too.
                    flags & 0xf0 == 0xf0
                };
                if bad {
                    return Err(Malformed);
                }
                ts = true;
            }
            ROUTER_ALERT if len < 4 => return Err(Malformed),
            _ => {}
        }
        rest = &rest[len..];
    }
    if srr {
        Err(OptionFault::SourceRoute)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_options_pass() {
        for opts in [
            &[][..],
            &[NOP, NOP, NOP, END],
            &[END, 0xff, 0xff, 0xff],      // after End: padding, not parsed
            &[ROUTER_ALERT, 4, 0, 0],      // Router Alert
            &[RR, 7, 4, 0, 0, 0, 0, END],  // Record Route, room for one address
            &[RR, 7, 8, 10, 0, 0, 1, END], // Record Route, full
            &[TIMESTAMP, 8, 5, 0, 0, 0, 0, 0], // timestamps only, one slot
            &[TIMESTAMP, 12, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0], // address + timestamp
            &[TIMESTAMP, 8, 9, 0x10, 0, 0, 0, 0], // full, overflow counter 1
            &[130, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, END], // Security (unknown here): passes
        ] {
            assert_eq!(check(opts), Ok(()), "{opts:?}");
        }
    }

    #[test]
    fn source_routes_are_refused() {
        for kind in [LSRR, SSRR] {
            let opts = [kind, 7, 4, 10, 0, 0, 1, END];
            assert_eq!(check(&opts), Err(OptionFault::SourceRoute), "{kind}");
            // A source route after other options is found too.
            let opts = [NOP, RR, 7, 4, 0, 0, 0, 0, kind, 7, 4, 10, 0, 0, 1, END];
            assert_eq!(check(&opts), Err(OptionFault::SourceRoute), "{kind}");
        }
    }

    #[test]
    fn options_that_do_not_parse_are_refused() {
        for opts in [
            &[RR][..],                                                   // no length byte
            &[RR, 1, 0, 0],                                              // length below 2
            &[RR, 0, 0, 0],                                              // length 0
            &[RR, 12, 4, 0, 0, 0, 0, 0],                                 // runs past the header
            &[ROUTER_ALERT, 2, NOP, NOP],                                // Router Alert too short
            &[RR, 7, 3, 0, 0, 0, 0, END],                                // pointer below 4
            &[RR, 6, 4, 0, 0, 0, END, END], // no room for the address it points at
            &[RR, 7, 4, 0, 0, 0, 0, RR, 7, 4, 0, 0, 0, 0, END, END], // twice
            &[TIMESTAMP, 8, 4, 0, 0, 0, 0, 0], // pointer below 5
            &[TIMESTAMP, 8, 5, 1, 0, 0, 0, 0], // address + timestamp without room
            &[TIMESTAMP, 8, 9, 0xf0, 0, 0, 0, 0], // full and the overflow counter full
            &[LSRR, 2, NOP, NOP],           // source route too short
            &[LSRR, 7, 3, 0, 0, 0, 0, END], // source route pointer below 4
            &[LSRR, 7, 4, 0, 0, 0, 0, SSRR, 7, 4, 0, 0, 0, 0, END, END], // two routes
            &[0x44, 3],                     // cut short
        ] {
            assert_eq!(check(opts), Err(OptionFault::Malformed), "{opts:?}");
        }
    }

    #[test]
    fn never_panics_on_any_short_input() {
        // Every 1-3 byte combination of a few interesting values.
        let v = [0u8, 1, 2, 3, 4, 5, 7, 8, 68, 131, 148, 0xf0, 0xff];
        for &a in &v {
            check(&[a]).ok();
            for &b in &v {
                check(&[a, b]).ok();
                for &c in &v {
                    check(&[a, b, c]).ok();
                    check(&[a, b, c, 0xf0]).ok();
                }
            }
        }
    }
}
