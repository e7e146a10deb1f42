#ifndef PKM_CSYSTEMSHIMS_H
#define PKM_CSYSTEMSHIMS_H

// Linux calls that Swift's Glibc module does not expose (they need _GNU_SOURCE, or are variadic).
#include <unistd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

#if defined(__linux__) && defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
#define PKM_HAVE_ADDCLOSEFROM 1
// Declared by <spawn.h> only under _GNU_SOURCE; present in glibc since 2.34.
extern int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *actions, int from);
#endif

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

/// Asks the kernel to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG), so a
/// helper process never outlives the process that started it. Returns 0, or -1 with errno set;
/// a no-op returning 0 where unsupported.
static inline int pkm_die_with_parent(void) {
#if defined(__linux__) && defined(PR_SET_PDEATHSIG)
    return prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
#else
    return 0;
#endif
}

/// Adds "close every descriptor from `from` up" to `actions`, so a spawned helper inherits only
/// stdin, stdout and stderr (and cannot hold a pipe of its parent's parent open). Returns 0, or
/// an error number; a no-op returning 0 where unsupported.
static inline int pkm_spawn_close_from(posix_spawn_file_actions_t *actions, int from) {
#if defined(PKM_HAVE_ADDCLOSEFROM)
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
#else
    (void)actions; (void)from;
    return 0;
#endif
}

#endif
