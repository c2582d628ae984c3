//! IPv4 fragments of untagged frames with 20-byte headers, cut and put back together as a
//! sender and a receiver would, for the in-memory tests of NAT, `ct` and the router.

/// Recompute the IPv4 header checksum of untagged frame `f` (after editing its header).
pub fn refill_ip_checksum(f: &mut [u8]) {
    f[24..26].fill(0);
    let c = uvs::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Cut `frame`'s IPv4 packet (20-byte header) in two at byte `at` of its payload (a multiple
/// of 8): the first fragment (offset 0, more fragments) and the last, both with id `ident`.
pub fn fragments(frame: &[u8], at: usize, ident: u16) -> (Vec<u8>, Vec<u8>) {
    let (head, payload) = frame.split_at(34);
    let piece = |bytes: &[u8], offset: usize, more: bool| {
        let mut f = head.to_vec();
        f.extend_from_slice(bytes);
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[18..20].copy_from_slice(&ident.to_be_bytes());
        let flags = (u16::from(more) << 13) | (offset / 8) as u16;
        f[20..22].copy_from_slice(&flags.to_be_bytes());
        refill_ip_checksum(&mut f);
        f
    };
    (
        piece(&payload[..at], 0, true),
        piece(&payload[at..], at, false),
    )
}

/// The whole frame the IPv4 fragments `pieces` (any order, 20-byte headers) make up.
pub fn reassemble(pieces: &[Vec<u8>]) -> Vec<u8> {
    let offset = |f: &Vec<u8>| (u16::from_be_bytes([f[20], f[21]]) & 0x1fff) as usize * 8;
    let mut v: Vec<&Vec<u8>> = pieces.iter().collect();
    v.sort_by_key(|f| offset(f));
    assert_eq!(offset(v[0]), 0, "a first fragment");
    let mut f = v[0][..34].to_vec();
    for p in &v {
        assert_eq!(offset(p), f.len() - 34, "contiguous");
        f.extend_from_slice(&p[34..]);
    }
    let total = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[20..22].fill(0);
    refill_ip_checksum(&mut f);
    f
}
