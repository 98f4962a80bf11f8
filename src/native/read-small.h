/* nbackup_fs: small regular files opened, checked, read and closed in a single call: one
 * (read-small.c), or a run of one directory's files with their tar headers (pack-files.c). */
#ifndef NBACKUP_READ_SMALL_H
#define NBACKUP_READ_SMALL_H
#include <node_api.h>

napi_value js_read_small_file(napi_env env, napi_callback_info info);
napi_value js_pack_files(napi_env env, napi_callback_info info);

/* Reads `size` bytes from the start of `fd` into `dst`; 0 when all of them came, -1 otherwise. */
int nbackup_read_whole(int fd, char *dst, size_t size);

#endif
