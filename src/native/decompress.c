/*
 * Restores read archives whose every block is one zstd frame (what the agent writes; other zstd
 * streams are cut into frames the same way). JS API:
 *   zstdFrame(buffer) → null while the frame at the start of `buffer` is incomplete, else
 *     { compressed, content }: its size in bytes and its decompressed size (-1 when the frame
 *     does not say). Throws on bytes that are not a zstd frame.
 *   zstdDecompress(frame, output, cb(err, n)): decompresses one whole frame into `output` on a pool
 *     thread; both buffers are referenced until the callback.
 *   gzipDecompress(members, output, cb(err, n)): the same for one or more whole gzip members
 *     (libdeflate); the input must end exactly where its last member does, and `output` must hold
 *     all of it, or the callback hears an error.
 */
#include "decompress.h"
#include "job.h"
#include <libdeflate.h>
#include <stdlib.h>
#include <zstd.h>
#include <zstd_errors.h>

static _Thread_local ZSTD_DCtx *dctx;
static _Thread_local struct libdeflate_decompressor *inflater;

enum { KIND_ZSTD, KIND_GZIP };

typedef struct {
  napi_async_work work;
  int kind;
  napi_ref refs[3]; /* input, output, callback */
  const void *input;
  size_t input_len;
  void *output;
  size_t output_len;
  size_t result;
  int nomem;
  const char *gzip_failure;
} djob_t;

/* Member after member until the input is used up; each must fit in what is left of the output. */
static const char *gunzip_members(const unsigned char *in, size_t in_len, unsigned char *out, size_t out_len, size_t *written) {
  size_t used = 0, made = 0;
  if (in_len == 0) return "an empty gzip block";
  while (used < in_len) {
    size_t in_n = 0, out_n = 0;
    enum libdeflate_result r = libdeflate_gzip_decompress_ex(inflater, in + used, in_len - used, out + made, out_len - made, &in_n, &out_n);
    if (r == LIBDEFLATE_INSUFFICIENT_SPACE) return "a gzip block decompresses to more bytes than expected";
    if (r != LIBDEFLATE_SUCCESS || in_n == 0) return "corrupt gzip data (bad deflate stream, CRC or length)";
    used += in_n;
    made += out_n;
  }
  *written = made;
  return NULL;
}

static void execute(napi_env env, void *data) {
  (void)env;
  djob_t *j = data;
  if (j->kind == KIND_GZIP) {
    if (!inflater) inflater = libdeflate_alloc_decompressor();
    j->nomem = !inflater;
    if (inflater) j->gzip_failure = gunzip_members(j->input, j->input_len, j->output, j->output_len, &j->result);
    return;
  }
  if (!dctx) dctx = ZSTD_createDCtx();
  j->nomem = !dctx;
  if (dctx) j->result = ZSTD_decompressDCtx(dctx, j->output, j->output_len, j->input, j->input_len);
}

static void complete(napi_env env, napi_status status, void *data) {
  djob_t *j = data;
  const char *failure = NULL;
  if (status != napi_ok) failure = "decompression job was cancelled";
  else if (j->nomem) failure = "out of memory allocating a decompressor";
  else if (j->kind == KIND_GZIP) failure = j->gzip_failure;
  else if (ZSTD_isError(j->result)) failure = ZSTD_getErrorName(j->result);
  napi_async_work work = j->work;
  napi_ref refs[3] = {j->refs[0], j->refs[1], j->refs[2]};
  double result = (double)j->result;
  free(j);
  nbackup_finish_job(env, work, refs, failure, result);
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

static napi_value queue_decompress(napi_env env, napi_callback_info info, int kind) {
  size_t argc = 3;
  napi_value argv[3];
  djob_t tmp = {0};
  napi_valuetype t;
  tmp.kind = kind;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    napi_throw_type_error(env, NULL, kind == KIND_GZIP ? "gzipDecompress(members, output, callback)" : "zstdDecompress(frame, output, callback)");
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
  nbackup_queue_job(env, argv[0], argv[1], argv[2], "nbackup:decompress", execute, complete, j, j->refs, &j->work);
  return NULL;
}

napi_value js_zstd_decompress(napi_env env, napi_callback_info info) { return queue_decompress(env, info, KIND_ZSTD); }

napi_value js_gzip_decompress(napi_env env, napi_callback_info info) { return queue_decompress(env, info, KIND_GZIP); }
