#ifndef PKM_CHDF5_SHIM_H
#define PKM_CHDF5_SHIM_H
// libhdf5 (found through pkg-config: Debian 12 ships 1.10.8, serial build). Swift cannot import the H5T_NATIVE_* / H5F_ACC_* /
// H5P_DEFAULT-style macros, so each one used by PKMHDF5 is exposed as a static inline function.
#include <hdf5.h>

static inline hid_t pkm_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t pkm_h5t_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t pkm_h5t_std_i8le(void) { return H5T_STD_I8LE; }
static inline hid_t pkm_h5t_std_u8le(void) { return H5T_STD_U8LE; }
static inline hid_t pkm_h5t_std_i16le(void) { return H5T_STD_I16LE; }
static inline hid_t pkm_h5t_std_u16le(void) { return H5T_STD_U16LE; }
static inline hid_t pkm_h5t_std_i32le(void) { return H5T_STD_I32LE; }
static inline hid_t pkm_h5t_std_i64le(void) { return H5T_STD_I64LE; }
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
static inline hid_t pkm_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t pkm_h5p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline hid_t pkm_h5p_file_access(void) { return H5P_FILE_ACCESS; }
static inline hid_t pkm_h5s_all(void) { return H5S_ALL; }
static inline hid_t pkm_h5e_default(void) { return H5E_DEFAULT; }

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


#endif
