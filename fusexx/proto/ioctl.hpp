// fusexx/proto/ioctl.hpp - ioctl request numbers of /dev/fuse (protocol 7.45).
#pragma once

#include <cstdint>
#include <linux/ioctl.h> // _IO/_IOR/_IOW; Linux-only, like the rest of fusexx

#include "fusexx/proto/structs.hpp"

namespace fusexx::proto {

inline constexpr unsigned dev_ioc_magic = 229;

// ioctl(new_fd, dev_ioc_clone, &(uint32_t)existing_fd): attach a freshly
// opened /dev/fuse to the connection of existing_fd. Each clone has its own
// processing queue, so a reply must go to the fd the request was read from.
inline constexpr unsigned long dev_ioc_clone = _IOR(dev_ioc_magic, 0, std::uint32_t);

// ioctl(fd, dev_ioc_backing_open, &backing_map) -> backing_id (>= 1) for
// open_out::backing_id with fopen::passthrough. 7.40; needs CAP_SYS_ADMIN and
// negotiated init_flag::passthrough, otherwise EPERM.
inline constexpr unsigned long dev_ioc_backing_open = _IOW(dev_ioc_magic, 1, backing_map);

// ioctl(fd, dev_ioc_backing_close, &(uint32_t)backing_id). Files already
// opened with the id keep their own reference.
inline constexpr unsigned long dev_ioc_backing_close = _IOW(dev_ioc_magic, 2, std::uint32_t);

// ioctl(fd, dev_ioc_sync_init) before mounting: the mount call (fsconfig
// CMD_CREATE / mount(2)) then blocks until INIT is answered, so mount errors
// are reported synchronously. No argument. Kernels without it: ENOTTY.
inline constexpr unsigned long dev_ioc_sync_init = _IO(dev_ioc_magic, 3);

// Computed by hand: dir(2 bits) << 30 | size << 16 | magic << 8 | nr.
static_assert(dev_ioc_clone == 0x8004e500ul);         // _IOC_READ, 4 bytes
static_assert(dev_ioc_backing_open == 0x4010e501ul);  // _IOC_WRITE, 16 bytes
static_assert(dev_ioc_backing_close == 0x4004e502ul); // _IOC_WRITE, 4 bytes
static_assert(dev_ioc_sync_init == 0x0000e503ul);     // _IOC_NONE, 0 bytes

} // namespace fusexx::proto
