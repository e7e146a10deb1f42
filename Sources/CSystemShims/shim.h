#ifndef PKM_CSYSTEMSHIMS_H
#define PKM_CSYSTEMSHIMS_H

// Linux calls that Swift's Glibc module does not expose (they need _GNU_SOURCE).
#include <unistd.h>
#include <sys/syscall.h>

/// Starts writeback of a byte range of `fd` to the device without waiting for it
/// (sync_file_range with SYNC_FILE_RANGE_WRITE), so a later fsync has little left to do.
/// Returns 0, or -1 with errno set; a no-op returning 0 where the call does not exist.
static inline int pkm_start_writeback(int fd, long long offset, long long length) {
#if defined(__linux__) && defined(SYS_sync_file_range)
    return (int)syscall(SYS_sync_file_range, fd, offset, length, 2 /* SYNC_FILE_RANGE_WRITE */);
#else
    (void)fd; (void)offset; (void)length;
    return 0;
#endif
}

#endif
