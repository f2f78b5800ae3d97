#pragma once
// Everything a filesystem author needs: #include <fusexx/fusexx.hpp>.
#include "backing.hpp"       // IWYU pragma: export
#include "connection.hpp"    // IWYU pragma: export
#include "daemonize.hpp"     // IWYU pragma: export
#include "dir_buffer.hpp"    // IWYU pragma: export
#include "session.hpp"       // IWYU pragma: export
#include "filesystem.hpp"    // IWYU pragma: export
#include "main.hpp"          // IWYU pragma: export
#include "notify.hpp"        // IWYU pragma: export
#include "request.hpp"       // IWYU pragma: export
#include "request_time.hpp"  // IWYU pragma: export
#include "restart/journal_note.hpp"  // IWYU pragma: export
#include "result.hpp"        // IWYU pragma: export
#include "server.hpp"        // IWYU pragma: export
#include "task.hpp"          // IWYU pragma: export
#include "types.hpp"         // IWYU pragma: export
