/*
 * nbackup_fs: the file-system calls the packer needs that Node has no cheap binding for.
 *
 * Where a file's data lies, so that sparse files are read and archived without their holes
 * (Node has no binding for lseek(2)), a whole small file read in one call (see read-small.c), and
 * a run of one directory's small files archived in one call (pack-files.c), and a directory
 * listed whole and sorted in two compact buffers (list-dir.c).
 *
 * JS API (see src/agent/pipeline/file-map.ts):
 *   dataExtents(fd: number, size: number, maxExtents: number) → number[] | null
 *     [offset0, length0, offset1, length1, ...]: the data regions of the open file `fd` below
 *     `size`, found with SEEK_DATA / SEEK_HOLE. null when the filesystem cannot tell (EINVAL), or
 *     when there are more than `maxExtents` regions (the caller then reads the file as a whole).
 *     Throws on any other error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <node_api.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "list-dir.h"
#include "read-small.h"

static napi_value throw_errno(napi_env env, const char *what) {
  char message[128];
  snprintf(message, sizeof(message), "%s: %s", what, strerror(errno));
  napi_throw_error(env, NULL, message);
  return NULL;
}

static napi_value js_data_extents(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd = -1;
  double size_d = -1, max_d = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_double(env, argv[1], &size_d) != napi_ok ||
      napi_get_value_double(env, argv[2], &max_d) != napi_ok || fd < 0 || !(size_d >= 0) || !(max_d >= 1)) {
    napi_throw_type_error(env, NULL, "dataExtents(fd, size, maxExtents) needs a descriptor, a size and a limit");
    return NULL;
  }
  const off_t size = (off_t)size_d;
  const uint32_t max_extents = (uint32_t)max_d;
  napi_value result;
  if (napi_create_array(env, &result) != napi_ok) return NULL;
  uint32_t n = 0;
  off_t at = 0;
  while (at < size) {
    off_t data = lseek(fd, at, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break; /* only a hole from `at` to the end */
      if (errno == EINVAL) goto unknown;
      return throw_errno(env, "lseek(SEEK_DATA)");
    }
    if (data >= size) break;
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) {
      if (errno == EINVAL) goto unknown;
      return throw_errno(env, "lseek(SEEK_HOLE)");
    }
    if (hole > size) hole = size;
    if (n / 2 >= max_extents) goto unknown;
    napi_value v;
    if (napi_create_double(env, (double)data, &v) != napi_ok || napi_set_element(env, result, n++, v) != napi_ok) return NULL;
    if (napi_create_double(env, (double)(hole - data), &v) != napi_ok || napi_set_element(env, result, n++, v) != napi_ok) return NULL;
    at = hole;
  }
  return result;
unknown : {
  napi_value null_value;
  napi_get_null(env, &null_value);
  return null_value;
}
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"dataExtents", NULL, js_data_extents, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readSmallFile", NULL, js_read_small_file, NULL, NULL, NULL, napi_enumerable, NULL},
      {"packFiles", NULL, js_pack_files, NULL, NULL, NULL, napi_enumerable, NULL},
      {"listDir", NULL, js_list_dir, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok) return NULL;
  return exports;
}
