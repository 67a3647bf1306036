//! Filling a `mmsghdr` for one datagram: one socket address (or none), one
//! iovec, no control data. The NFQUEUE socket's receives, the raw reply
//! sender's `sendmmsg` and the media relay's batches all use this shape.

/// Points `hdr` at `name` (`namelen` bytes; null and 0 for none) and at
/// `iov`, with no control data, flags and length cleared for the call.
pub fn point(hdr: &mut libc::mmsghdr, name: *mut libc::c_void, namelen: libc::socklen_t, iov: &mut libc::iovec) {
    hdr.msg_hdr.msg_name = name;
    hdr.msg_hdr.msg_namelen = namelen;
    hdr.msg_hdr.msg_iov = iov as *mut libc::iovec;
    hdr.msg_hdr.msg_iovlen = 1;
    hdr.msg_hdr.msg_control = std::ptr::null_mut();
    hdr.msg_hdr.msg_controllen = 0;
    hdr.msg_hdr.msg_flags = 0;
    hdr.msg_len = 0;
}
