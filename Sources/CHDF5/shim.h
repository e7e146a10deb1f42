#ifndef PKM_CHDF5_SHIM_H
#define PKM_CHDF5_SHIM_H
// libhdf5 1.10 (Debian serial build). Swift cannot import the H5T_NATIVE_* / H5F_ACC_* /
// H5P_DEFAULT-style macros, so each one used by PKMFormats is exposed as a static inline function.
#include <hdf5/serial/hdf5.h>

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

#endif
