/*
 * Restores read archives whose every block is one zstd frame (what the agent writes; other zstd
 * streams are cut into frames the same way). JS API:
 *   zstdFrame(buffer) → null while the frame at the start of `buffer` is incomplete, else
 *     { compressed, content }: its size in bytes and its decompressed size (-1 when the frame
 *     does not say). Throws on bytes that are not a zstd frame.
 *   zstdDecompress(frame, output, cb(err, n)): decompresses one whole frame into `output` on a pool
 *     thread; both buffers are referenced until the callback.
 */
#include "decompress.h"
#include <stdlib.h>
#include <zstd.h>
#include <zstd_errors.h>

static _Thread_local ZSTD_DCtx *dctx;

typedef struct {
  napi_async_work work;
  napi_ref input_ref, output_ref, callback_ref;
  const void *input;
  size_t input_len;
  void *output;
  size_t output_len;
  size_t result;
} djob_t;

static void execute(napi_env env, void *data) {
  (void)env;
  djob_t *j = data;
  if (!dctx) dctx = ZSTD_createDCtx();
  j->result = dctx ? ZSTD_decompressDCtx(dctx, j->output, j->output_len, j->input, j->input_len) : (size_t)-1;
}

static void complete(napi_env env, napi_status status, void *data) {
  djob_t *j = data;
  napi_value callback, global, argv[2], ignored;
  napi_get_reference_value(env, j->callback_ref, &callback);
  napi_get_global(env, &global);
  const char *failure = NULL;
  if (status != napi_ok) failure = "decompression job was cancelled";
  else if (j->result == (size_t)-1 && !dctx) failure = "out of memory allocating a decompressor";
  else if (ZSTD_isError(j->result)) failure = ZSTD_getErrorName(j->result);
  if (failure) {
    napi_value msg;
    napi_create_string_utf8(env, failure, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &argv[0]);
    napi_get_undefined(env, &argv[1]);
  } else {
    napi_get_null(env, &argv[0]);
    napi_create_double(env, (double)j->result, &argv[1]);
  }
  napi_delete_reference(env, j->input_ref);
  napi_delete_reference(env, j->output_ref);
  napi_delete_reference(env, j->callback_ref);
  napi_delete_async_work(env, j->work);
  free(j);
  napi_call_function(env, global, callback, 2, argv, &ignored);
}

static int buffer_arg(napi_env env, napi_value v, void **data, size_t *len) {
  bool ok = false;
  if (napi_is_buffer(env, v, &ok) != napi_ok || !ok || napi_get_buffer_info(env, v, data, len) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a Buffer");
    return 0;
  }
  return 1;
}

napi_value js_zstd_frame(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out, v;
  void *data;
  size_t len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || !buffer_arg(env, argv[0], &data, &len)) return NULL;
  size_t n = ZSTD_findFrameCompressedSize(data, len);
  if (ZSTD_isError(n)) {
    /* Too few bytes to tell is "wait for more"; anything else is not a zstd frame. */
    if (ZSTD_getErrorCode(n) == ZSTD_error_srcSize_wrong) {
      napi_get_null(env, &out);
      return out;
    }
    napi_throw_error(env, NULL, "not a zstd frame");
    return NULL;
  }
  unsigned long long content = ZSTD_getFrameContentSize(data, n);
  napi_create_object(env, &out);
  napi_create_double(env, (double)n, &v);
  napi_set_named_property(env, out, "compressed", v);
  napi_create_double(env, content == ZSTD_CONTENTSIZE_UNKNOWN || content == ZSTD_CONTENTSIZE_ERROR ? -1.0 : (double)content, &v);
  napi_set_named_property(env, out, "content", v);
  return out;
}

napi_value js_zstd_decompress(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], name;
  djob_t tmp = {0};
  napi_valuetype t;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    napi_throw_type_error(env, NULL, "zstdDecompress(frame, output, callback)");
    return NULL;
  }
  if (!buffer_arg(env, argv[0], (void **)&tmp.input, &tmp.input_len) || !buffer_arg(env, argv[1], &tmp.output, &tmp.output_len)) return NULL;
  if (napi_typeof(env, argv[2], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, NULL, "callback must be a function");
    return NULL;
  }
  djob_t *j = malloc(sizeof(djob_t));
  if (!j) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  *j = tmp;
  if (napi_create_reference(env, argv[0], 1, &j->input_ref) != napi_ok || napi_create_reference(env, argv[1], 1, &j->output_ref) != napi_ok ||
      napi_create_reference(env, argv[2], 1, &j->callback_ref) != napi_ok ||
      napi_create_string_utf8(env, "nbackup:decompress", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, j, &j->work) != napi_ok || napi_queue_async_work(env, j->work) != napi_ok) {
    napi_throw_error(env, NULL, "cannot queue a decompression job");
    return NULL;
  }
  return NULL;
}
