// fusexx/proto/abi.hpp - the whole FUSE wire ABI (protocol 7.45) in one include.
//
// Our own definitions of the kernel UAPI (include/uapi/linux/fuse.h of Linux
// 6.18); never include <linux/fuse.h> alongside for these purposes, Debian's
// copy is 7.38.
#pragma once

#include "fusexx/proto/version.hpp"
#include "fusexx/proto/opcodes.hpp"
#include "fusexx/proto/flags.hpp"
#include "fusexx/proto/structs.hpp"
#include "fusexx/proto/ioctl.hpp"
#include "fusexx/proto/uring.hpp"
