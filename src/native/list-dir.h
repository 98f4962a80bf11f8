/* nbackup_fs: a directory listed whole and sorted, in two compact buffers (list-dir.c). */
#ifndef NBACKUP_LIST_DIR_H
#define NBACKUP_LIST_DIR_H
#include <node_api.h>

napi_value js_list_dir(napi_env env, napi_callback_info info);

#endif
