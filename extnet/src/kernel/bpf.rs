//! A cgroup-bpf program that gives every IPv4/IPv6 socket created in a job's cgroup its slot's
//! packet mark (`BPF_CGROUP_INET_SOCK_CREATE` writing `bpf_sock.mark`, like `SO_MARK`).
//!
//! Why: a process's first route lookup happens at `connect()`/`sendto()`, before any packet
//! exists, with the socket's own mark. On a "nothing out" node the main table has no route
//! out, so without the mark on the socket the lookup fails (`ENETUNREACH`) before the nft
//! output chain could mark a packet and reroute it. With the mark on the socket the first
//! lookup already goes to the external table. A job cannot change its sockets' mark (`SO_MARK`
//! needs `CAP_NET_ADMIN`).
//!
//! The program is four instructions, written here by hand and loaded with the `bpf(2)` syscall:
//! no libbpf, no compiler, no object file. The attachment lives with the cgroup: the loading
//! process can exit.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_SOCK: u32 = 9;
const BPF_CGROUP_INET_SOCK_CREATE: u32 = 2;
/// `offsetof(struct bpf_sock, mark)`
const BPF_SOCK_MARK_OFFSET: i16 = 16;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("cannot load the socket-mark bpf program (mark 0x{mark:x}): {source}; the kernel needs CONFIG_CGROUP_BPF and the prolog must run as root{verifier}")]
    Load {
        mark: u32,
        source: std::io::Error,
        verifier: String,
    },
    #[error("cannot open cgroup {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot attach the socket-mark bpf program to cgroup {path}: {source}; the cgroup must be in the cgroup2 hierarchy")]
    Attach {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8, // dst_reg: low 4 bits, src_reg: high 4 bits
    off: i16,
    imm: i32,
}

/// `r2 = mark; *(u32 *)(r1 + offsetof(bpf_sock, mark)) = r2; r0 = 1; exit`
fn program(mark: u32) -> [Insn; 4] {
    [
        Insn {
            code: 0xb7,
            regs: 0x02,
            off: 0,
            imm: mark as i32,
        }, // BPF_ALU64|BPF_MOV|BPF_K
        Insn {
            code: 0x63,
            regs: 0x21,
            off: BPF_SOCK_MARK_OFFSET,
            imm: 0,
        }, // BPF_STX|BPF_MEM|BPF_W
        Insn {
            code: 0xb7,
            regs: 0x00,
            off: 0,
            imm: 1,
        }, // allow the socket
        Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        }, // BPF_JMP|BPF_EXIT
    ]
}

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u8; 56],
}

#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _rest: [u8; 44],
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialized #[repr(C)] struct laid out as the kernel's
    // `union bpf_attr` member for `cmd`, and its size is passed along; the kernel only reads
    // (and for PROG_LOAD writes the log into the buffer the attr points at, none here).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads the program for `mark`.
fn load(mark: u32) -> Result<OwnedFd, BpfError> {
    let insns = program(mark);
    let license = b"GPL\0";
    let mut log = vec![0u8; 4096];
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"extnet_mark");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_SOCK,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_INET_SOCK_CREATE,
        _rest: [0; 56],
    };
    match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: on success BPF_PROG_LOAD returns a new file descriptor that we now own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(source) => {
            let text =
                String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)])
                    .trim()
                    .to_owned();
            let verifier = if text.is_empty() {
                String::new()
            } else {
                format!(" (verifier: {text})")
            };
            Err(BpfError::Load {
                mark,
                source,
                verifier,
            })
        }
    }
}

/// Attaches (or replaces) the socket-mark program of `mark` on cgroup `dir`. Equals
/// `bpftool cgroup attach DIR sock_create pinned PROG` for a program that sets the mark.
pub fn attach_sock_mark(dir: &Path, mark: u32) -> Result<(), BpfError> {
    let prog = load(mark)?;
    let cg = std::fs::File::open(dir).map_err(|source| BpfError::Open {
        path: dir.to_owned(),
        source,
    })?;
    let mut attr = ProgAttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_INET_SOCK_CREATE,
        attach_flags: 0, // one program per cgroup; a new attach replaces the old one
        replace_bpf_fd: 0,
        _rest: [0; 44],
    };
    sys_bpf(BPF_PROG_ATTACH, &mut attr).map_err(|source| BpfError::Attach {
        path: dir.to_owned(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_sizes_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(ProgAttachAttr, replace_bpf_fd), 16);
        let p = program(0x10007);
        assert_eq!(p[0].imm, 0x10007);
        assert_eq!(p[1].off, 16);
    }
}
