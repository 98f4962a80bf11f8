/* nbackup_fs: one small regular file opened, checked, read and closed in a single call. */
#ifndef NBACKUP_READ_SMALL_H
#define NBACKUP_READ_SMALL_H
#include <node_api.h>

napi_value js_read_small_file(napi_env env, napi_callback_info info);

#endif
