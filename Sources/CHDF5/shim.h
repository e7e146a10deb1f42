#ifndef PKM_CHDF5_SHIM_H
#define PKM_CHDF5_SHIM_H
// libhdf5 1.10 (Debian serial build). Swift cannot import the H5T_NATIVE_* / H5F_ACC_* /
// H5P_DEFAULT-style macros, so each one used by PKMFormats is exposed as a static inline function.
#include <hdf5/serial/hdf5.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static inline hid_t pkm_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t pkm_h5t_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t pkm_h5t_std_i8le(void) { return H5T_STD_I8LE; }
static inline hid_t pkm_h5t_std_u8le(void) { return H5T_STD_U8LE; }
static inline hid_t pkm_h5t_std_i16le(void) { return H5T_STD_I16LE; }
static inline hid_t pkm_h5t_std_u16le(void) { return H5T_STD_U16LE; }
static inline hid_t pkm_h5t_std_i32le(void) { return H5T_STD_I32LE; }
static inline hid_t pkm_h5t_std_u32le(void) { return H5T_STD_U32LE; }
static inline hid_t pkm_h5t_std_i64le(void) { return H5T_STD_I64LE; }
static inline hid_t pkm_h5t_std_u64le(void) { return H5T_STD_U64LE; }
static inline hid_t pkm_h5t_ieee_f32le(void) { return H5T_IEEE_F32LE; }
static inline hid_t pkm_h5t_ieee_f64le(void) { return H5T_IEEE_F64LE; }
static inline hid_t pkm_h5t_native_int8(void) { return H5T_NATIVE_INT8; }
static inline hid_t pkm_h5t_native_uint8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t pkm_h5t_native_uint16(void) { return H5T_NATIVE_UINT16; }
static inline hid_t pkm_h5t_native_int32(void) { return H5T_NATIVE_INT32; }
static inline hid_t pkm_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t pkm_h5t_c_s1(void) { return H5T_C_S1; }
static inline size_t pkm_h5t_variable(void) { return H5T_VARIABLE; }
static inline unsigned pkm_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned pkm_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline unsigned pkm_h5f_acc_excl(void) { return H5F_ACC_EXCL; }
static inline hid_t pkm_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t pkm_h5p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline hid_t pkm_h5p_file_access(void) { return H5P_FILE_ACCESS; }
static inline hid_t pkm_h5p_link_create(void) { return H5P_LINK_CREATE; }
static inline hid_t pkm_h5s_all(void) { return H5S_ALL; }
static inline hid_t pkm_h5e_default(void) { return H5E_DEFAULT; }
static inline hsize_t pkm_h5s_unlimited(void) { return H5S_UNLIMITED; }

static inline hid_t pkm_h5t_native_int16(void) { return H5T_NATIVE_INT16; }
static inline hid_t pkm_h5t_native_uint64(void) { return H5T_NATIVE_UINT64; }
static inline hid_t pkm_h5t_native_int(void) { return H5T_NATIVE_INT; }
static inline hid_t pkm_h5p_group_create(void) { return H5P_GROUP_CREATE; }
static inline hid_t pkm_h5p_file_create(void) { return H5P_FILE_CREATE; }

/// The id of filter `index` of a dataset creation property list, with its name copied into
/// `name` (NUL-terminated, at most `name_size` bytes); client data values are not returned.
static inline H5Z_filter_t pkm_h5p_get_filter_id(hid_t plist, unsigned index, char *name, size_t name_size) {
    unsigned flags = 0;
    size_t cd_count = 0;
    unsigned filter_config = 0;
    if (name_size > 0) { name[0] = 0; }
    return H5Pget_filter2(plist, index, &flags, &cd_count, NULL, name_size, name, &filter_config);
}


// ---------------------------------------------------------------------------------------------
// A minimal virtual file driver that writes an HDF5 file into an already open descriptor.
//
// Why: HDF5Writer writes through AtomicOutputFile, whose data lives in an anonymous O_TMPFILE
// inode reachable only as /proc/self/fd/N. libhdf5 1.10 resolves a file name that is a symbolic
// link with realpath() (H5F__build_actual_name), which fails for such an inode ("can't retrieve
// real path for file"), so the stock sec2 driver cannot create the file there. This driver does
// the same positioned I/O as sec2 on a duplicate of the descriptor instead. The file name given
// to H5Fcreate only carries the descriptor number: pkm_h5fd_fd_name() builds
// "/proc/self/fd/pkm-hdf5-output-N", a path that does not exist; since the driver does not
// claim a POSIX-compatible handle, libhdf5 never lstat()s or resolves that name.
// Files written this way are ordinary HDF5 files (no driver information in the superblock).
// ---------------------------------------------------------------------------------------------

typedef struct {
    H5FD_t pub;      /* public fields, filled in by libhdf5; must come first */
    int fd;          /* our duplicate of the caller's descriptor */
    haddr_t eoa;     /* end of allocated space */
    haddr_t eof;     /* end of file (bytes present) */
    dev_t device;
    ino_t inode;
} pkm_fd_file;

#define PKM_FD_MAXADDR ((haddr_t)(((uint64_t)1 << 62) - 1))
#define PKM_FD_IO_CHUNK ((size_t)1 << 30)
#define PKM_FD_NAME_FORMAT "/proc/self/fd/pkm-hdf5-output-%d"

static void pkm_fd_error(const char *function, hid_t minor, const char *what, int error_number) {
    char message[256];
    if (error_number != 0) {
        snprintf(message, sizeof message, "%s: %s", what, strerror(error_number));
    } else {
        snprintf(message, sizeof message, "%s", what);
    }
    H5Epush2(H5E_DEFAULT, __FILE__, function, __LINE__, H5E_ERR_CLS, H5E_VFL, minor, "%s", message);
}

static H5FD_t *pkm_fd_open(const char *name, unsigned flags, hid_t fapl, haddr_t maxaddr) {
    (void)fapl;
    int source = -1;
    if (name == NULL || sscanf(name, PKM_FD_NAME_FORMAT, &source) != 1 || source < 0) {
        pkm_fd_error("pkm_fd_open", H5E_BADVALUE, "not a descriptor name made by pkm_h5fd_fd_name", 0);
        return NULL;
    }
    if (maxaddr == 0 || maxaddr == HADDR_UNDEF || maxaddr > PKM_FD_MAXADDR) {
        maxaddr = PKM_FD_MAXADDR;
    }
    int fd = fcntl(source, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        pkm_fd_error("pkm_fd_open", H5E_CANTOPENFILE, "dup", errno);
        return NULL;
    }
    if ((flags & H5F_ACC_TRUNC) && ftruncate(fd, 0) != 0) {
        int saved = errno;
        close(fd);
        pkm_fd_error("pkm_fd_open", H5E_CANTOPENFILE, "ftruncate", saved);
        return NULL;
    }
    struct stat status;
    if (fstat(fd, &status) != 0) {
        int saved = errno;
        close(fd);
        pkm_fd_error("pkm_fd_open", H5E_CANTOPENFILE, "fstat", saved);
        return NULL;
    }
    pkm_fd_file *file = (pkm_fd_file *)calloc(1, sizeof(pkm_fd_file));
    if (file == NULL) {
        close(fd);
        pkm_fd_error("pkm_fd_open", H5E_CANTOPENFILE, "out of memory", 0);
        return NULL;
    }
    file->fd = fd;
    file->eoa = 0;
    file->eof = (haddr_t)status.st_size;
    file->device = status.st_dev;
    file->inode = status.st_ino;
    return &file->pub;
}

static herr_t pkm_fd_close(H5FD_t *base) {
    pkm_fd_file *file = (pkm_fd_file *)base;
    int result = close(file->fd);
    int saved = errno;
    free(file);
    if (result != 0) {
        pkm_fd_error("pkm_fd_close", H5E_CANTCLOSEFILE, "close", saved);
        return -1;
    }
    return 0;
}

static int pkm_fd_compare(const H5FD_t *left_base, const H5FD_t *right_base) {
    const pkm_fd_file *left = (const pkm_fd_file *)left_base;
    const pkm_fd_file *right = (const pkm_fd_file *)right_base;
    if (left->device != right->device) { return left->device < right->device ? -1 : 1; }
    if (left->inode != right->inode) { return left->inode < right->inode ? -1 : 1; }
    return 0;
}

static herr_t pkm_fd_query(const H5FD_t *base, unsigned long *flags) {
    (void)base;
    if (flags) {
        *flags = H5FD_FEAT_AGGREGATE_METADATA | H5FD_FEAT_ACCUMULATE_METADATA | H5FD_FEAT_DATA_SIEVE |
                 H5FD_FEAT_AGGREGATE_SMALLDATA | H5FD_FEAT_DEFAULT_VFD_COMPATIBLE;
        /* Not H5FD_FEAT_POSIX_COMPAT_HANDLE: without it libhdf5 does not lstat/realpath the name. */
    }
    return 0;
}

static haddr_t pkm_fd_get_eoa(const H5FD_t *base, H5FD_mem_t type) {
    (void)type;
    return ((const pkm_fd_file *)base)->eoa;
}

static herr_t pkm_fd_set_eoa(H5FD_t *base, H5FD_mem_t type, haddr_t address) {
    (void)type;
    ((pkm_fd_file *)base)->eoa = address;
    return 0;
}

static haddr_t pkm_fd_get_eof(const H5FD_t *base, H5FD_mem_t type) {
    (void)type;
    return ((const pkm_fd_file *)base)->eof;
}

static herr_t pkm_fd_get_handle(H5FD_t *base, hid_t fapl, void **handle) {
    (void)fapl;
    if (handle == NULL) { return -1; }
    *handle = &((pkm_fd_file *)base)->fd;
    return 0;
}

static int pkm_fd_range_ok(const pkm_fd_file *file, haddr_t address, size_t size) {
    if (address == HADDR_UNDEF || address > PKM_FD_MAXADDR) { return 0; }
    if ((haddr_t)size > PKM_FD_MAXADDR - address) { return 0; }
    return address + (haddr_t)size <= file->eoa;
}

static herr_t pkm_fd_read(H5FD_t *base, H5FD_mem_t type, hid_t dxpl, haddr_t address, size_t size, void *buffer) {
    (void)type; (void)dxpl;
    pkm_fd_file *file = (pkm_fd_file *)base;
    if (!pkm_fd_range_ok(file, address, size)) {
        pkm_fd_error("pkm_fd_read", H5E_OVERFLOW, "read beyond the allocated end of the file", 0);
        return -1;
    }
    unsigned char *out = (unsigned char *)buffer;
    while (size > 0) {
        size_t chunk = size < PKM_FD_IO_CHUNK ? size : PKM_FD_IO_CHUNK;
        ssize_t count = pread(file->fd, out, chunk, (off_t)address);
        if (count < 0) {
            if (errno == EINTR) { continue; }
            pkm_fd_error("pkm_fd_read", H5E_READERROR, "pread", errno);
            return -1;
        }
        if (count == 0) {  /* past the end of the bytes present: zeros, as sec2 does */
            memset(out, 0, size);
            break;
        }
        size -= (size_t)count;
        address += (haddr_t)count;
        out += count;
    }
    return 0;
}

static herr_t pkm_fd_write(H5FD_t *base, H5FD_mem_t type, hid_t dxpl, haddr_t address, size_t size, const void *buffer) {
    (void)type; (void)dxpl;
    pkm_fd_file *file = (pkm_fd_file *)base;
    if (!pkm_fd_range_ok(file, address, size)) {
        pkm_fd_error("pkm_fd_write", H5E_OVERFLOW, "write beyond the allocated end of the file", 0);
        return -1;
    }
    const unsigned char *in = (const unsigned char *)buffer;
    while (size > 0) {
        size_t chunk = size < PKM_FD_IO_CHUNK ? size : PKM_FD_IO_CHUNK;
        ssize_t count = pwrite(file->fd, in, chunk, (off_t)address);
        if (count < 0) {
            if (errno == EINTR) { continue; }
            pkm_fd_error("pkm_fd_write", H5E_WRITEERROR, "pwrite", errno);
            return -1;
        }
        if (count == 0) {
            pkm_fd_error("pkm_fd_write", H5E_WRITEERROR, "pwrite wrote nothing (device full?)", 0);
            return -1;
        }
        size -= (size_t)count;
        address += (haddr_t)count;
        in += count;
        if (address > file->eof) { file->eof = address; }
    }
    return 0;
}

static herr_t pkm_fd_flush(H5FD_t *base, hid_t dxpl, hbool_t closing) {
    (void)base; (void)dxpl; (void)closing;
    return 0;  /* AtomicOutputFile fsyncs before committing */
}

static herr_t pkm_fd_truncate(H5FD_t *base, hid_t dxpl, hbool_t closing) {
    (void)dxpl; (void)closing;
    pkm_fd_file *file = (pkm_fd_file *)base;
    if (file->eoa != file->eof) {
        if (ftruncate(file->fd, (off_t)file->eoa) != 0) {
            pkm_fd_error("pkm_fd_truncate", H5E_WRITEERROR, "ftruncate", errno);
            return -1;
        }
        file->eof = file->eoa;
    }
    return 0;
}

__attribute__((unused)) static const H5FD_class_t pkm_fd_class = {
    .name = "pkm_fd",
    .maxaddr = PKM_FD_MAXADDR,
    .fc_degree = H5F_CLOSE_WEAK,
    .open = pkm_fd_open,
    .close = pkm_fd_close,
    .cmp = pkm_fd_compare,
    .query = pkm_fd_query,
    .get_eoa = pkm_fd_get_eoa,
    .set_eoa = pkm_fd_set_eoa,
    .get_eof = pkm_fd_get_eof,
    .get_handle = pkm_fd_get_handle,
    .read = pkm_fd_read,
    .write = pkm_fd_write,
    .flush = pkm_fd_flush,
    .truncate = pkm_fd_truncate,
    .fl_map = H5FD_FLMAP_DICHOTOMY,
};

/// The id of the descriptor driver, registered on first use (call with the libhdf5 lock held).
static inline hid_t pkm_h5fd_fd_driver(void) {
    static hid_t driver = -1;
    if (driver < 0 || H5Iis_valid(driver) <= 0) {
        driver = H5FDregister(&pkm_fd_class);
    }
    return driver;
}

/// Selects the descriptor driver in a file access property list.
static inline herr_t pkm_h5p_set_fapl_fd(hid_t fapl) {
    hid_t driver = pkm_h5fd_fd_driver();
    if (driver < 0) { return -1; }
    return H5Pset_driver(fapl, driver, NULL);
}

/// Writes the file name that makes the descriptor driver use descriptor `fd` into `name`.
static inline int pkm_h5fd_fd_name(int fd, char *name, size_t size) {
    return snprintf(name, size, PKM_FD_NAME_FORMAT, fd);
}

#endif
