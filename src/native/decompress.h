/* Whole-block zstd and gzip decompression for restores (decompress.c), registered by codecs.c. */
#ifndef NBACKUP_DECOMPRESS_H
#define NBACKUP_DECOMPRESS_H
#include <node_api.h>
napi_value js_zstd_frame(napi_env env, napi_callback_info info);
napi_value js_zstd_decompress(napi_env env, napi_callback_info info);
napi_value js_gzip_decompress(napi_env env, napi_callback_info info);
#endif
