/*
 * nbackup_gzip: whole-block gzip compression with libdeflate, run on libuv's thread pool.
 *
 * Why: on the 2-core benchmark machine, libdeflate level 1 needs about half the CPU of zlib level 1
 * for the same data (and writes slightly smaller output); compression is most of the agent's CPU.
 * See docs/design.md for the figures.
 *
 * JS API (see src/agent/gzip-codec.ts):
 *   compress(input: Buffer, output: Buffer, level: number, cb: (err: Error|null, n: number) => void)
 *     Compresses all of `input` as one complete gzip member into `output` on a pool thread; calls
 *     back with the member's length. `output` must be at least bound(input.length) bytes. The
 *     buffers are referenced until the callback runs and must not be touched meanwhile.
 *   bound(length) → upper bound of the compressed size of `length` bytes.
 *
 * Each pool thread keeps one compressor per level (thread-local), so a block costs no allocation.
 */
#include <node_api.h>
#include <stdlib.h>
#include <string.h>

#include "libdeflate/libdeflate.h"

#define MAX_LEVEL 12

static _Thread_local struct libdeflate_compressor *compressors[MAX_LEVEL + 1];

static struct libdeflate_compressor *compressor_for(int level) {
  if (!compressors[level]) compressors[level] = libdeflate_alloc_compressor(level);
  return compressors[level];
}

typedef struct {
  napi_async_work work;
  napi_ref input_ref;
  napi_ref output_ref;
  napi_ref callback_ref;
  const void *input;
  size_t input_len;
  void *output;
  size_t output_len;
  int level;
  size_t result;
  int no_memory;
} job_t;

#define CHECK(env, call)                                                      \
  do {                                                                        \
    if ((call) != napi_ok) {                                                  \
      const napi_extended_error_info *info = NULL;                            \
      napi_get_last_error_info((env), &info);                                 \
      napi_throw_error((env), NULL,                                           \
                       info && info->error_message ? info->error_message      \
                                                   : "N-API call failed");    \
      return NULL;                                                            \
    }                                                                         \
  } while (0)

static int get_buffer(napi_env env, napi_value v, void **data, size_t *len, const char *what) {
  bool is_buffer = false;
  if (napi_is_buffer(env, v, &is_buffer) != napi_ok || !is_buffer) {
    napi_throw_type_error(env, NULL, what);
    return 0;
  }
  if (napi_get_buffer_info(env, v, data, len) != napi_ok) {
    napi_throw_type_error(env, NULL, what);
    return 0;
  }
  return 1;
}

static int get_level(napi_env env, napi_value v, int *level) {
  int32_t l = -1;
  if (napi_get_value_int32(env, v, &l) != napi_ok || l < 0 || l > MAX_LEVEL) {
    napi_throw_range_error(env, NULL, "level must be an integer from 0 to 12");
    return 0;
  }
  *level = l;
  return 1;
}

static void execute(napi_env env, void *data) {
  (void)env;
  job_t *job = data;
  struct libdeflate_compressor *c = compressor_for(job->level);
  if (!c) {
    job->no_memory = 1;
    return;
  }
  job->result = libdeflate_gzip_compress(c, job->input, job->input_len, job->output, job->output_len);
}

static void complete(napi_env env, napi_status status, void *data) {
  job_t *job = data;
  napi_value callback, global, argv[2], ignored;
  napi_get_reference_value(env, job->callback_ref, &callback);
  napi_get_global(env, &global);
  const char *failure = NULL;
  if (status != napi_ok) failure = "gzip job was cancelled";
  else if (job->no_memory) failure = "out of memory allocating a gzip compressor";
  else if (job->result == 0) failure = "gzip output buffer too small";
  if (failure) {
    napi_value msg;
    napi_create_string_utf8(env, failure, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &argv[0]);
    napi_get_undefined(env, &argv[1]);
  } else {
    napi_get_null(env, &argv[0]);
    napi_create_double(env, (double)job->result, &argv[1]);
  }
  napi_delete_reference(env, job->input_ref);
  napi_delete_reference(env, job->output_ref);
  napi_delete_reference(env, job->callback_ref);
  napi_delete_async_work(env, job->work);
  free(job);
  napi_call_function(env, global, callback, 2, argv, &ignored);
}

static napi_value js_compress(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) {
    napi_throw_type_error(env, NULL, "compress(input, output, level, callback)");
    return NULL;
  }
  void *in, *out;
  size_t in_len, out_len;
  int level;
  if (!get_buffer(env, argv[0], &in, &in_len, "input must be a Buffer")) return NULL;
  if (!get_buffer(env, argv[1], &out, &out_len, "output must be a Buffer")) return NULL;
  if (!get_level(env, argv[2], &level)) return NULL;
  napi_valuetype t;
  CHECK(env, napi_typeof(env, argv[3], &t));
  if (t != napi_function) {
    napi_throw_type_error(env, NULL, "callback must be a function");
    return NULL;
  }
  job_t *job = calloc(1, sizeof(job_t));
  if (!job) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  job->input = in;
  job->input_len = in_len;
  job->output = out;
  job->output_len = out_len;
  job->level = level;
  napi_value name;
  CHECK(env, napi_create_reference(env, argv[0], 1, &job->input_ref));
  CHECK(env, napi_create_reference(env, argv[1], 1, &job->output_ref));
  CHECK(env, napi_create_reference(env, argv[3], 1, &job->callback_ref));
  CHECK(env, napi_create_string_utf8(env, "nbackup:gzip", NAPI_AUTO_LENGTH, &name));
  CHECK(env, napi_create_async_work(env, NULL, name, execute, complete, job, &job->work));
  CHECK(env, napi_queue_async_work(env, job->work));
  return NULL;
}

static napi_value js_bound(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double len = -1;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_double(env, argv[0], &len) != napi_ok || !(len >= 0) || len > 1e15) {
    napi_throw_range_error(env, NULL, "bound(length) needs a non-negative length");
    return NULL;
  }
  napi_value result;
  CHECK(env, napi_create_double(env, (double)libdeflate_gzip_compress_bound(NULL, (size_t)len), &result));
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"compress", NULL, js_compress, NULL, NULL, NULL, napi_enumerable, NULL},
      {"bound", NULL, js_bound, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok) return NULL;
  return exports;
}
