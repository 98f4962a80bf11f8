/*
 * nbackup_codec: whole-block compression on libuv's thread pool with the system's libraries:
 * ISA-L's igzip and libdeflate for gzip, libzstd for zstd. Each block becomes one complete gzip
 * member or zstd frame, so blocks are compressed independently and in parallel, and the
 * concatenation is a standard .gz / .zst stream.
 *
 * JS API (see src/agent/pipeline/codecs.ts):
 *   compress(engine, input, output, level, cb(err, n))
 *     engine 0 = igzip (levels 0..3), 1 = libdeflate (1..12), 2 = zstd (1..22). Compresses all of
 *     `input` into `output` (at least bound(engine, input.length) bytes) on a pool thread and calls
 *     back with the length written. Both buffers are referenced until then; do not touch them.
 *   bound(engine, length) → the most bytes `length` input bytes can compress to.
 *   versions() → { isal, libdeflate, zstd }: the library versions linked.
 *   zstdFrame, zstdDecompress: restores (decompress.c).
 *
 * Each pool thread keeps its own compressor state per engine and level (thread-local, made on
 * first use), so a block costs no allocation.
 */
#include "decompress.h"
#include "job.h"
#include <isa-l/igzip_lib.h>
#include <libdeflate.h>
#include <node_api.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#ifndef NBACKUP_ISAL_VERSION
#define NBACKUP_ISAL_VERSION "unknown"
#endif

enum { ENGINE_IGZIP = 0, ENGINE_LIBDEFLATE = 1, ENGINE_ZSTD = 2 };
static const int max_level[] = {3, 12, 22};
static const int min_level[] = {0, 1, 1};

/* ---- per-thread compressor state ---------------------------------------------------------- */

static _Thread_local struct libdeflate_compressor *deflaters[13];
static _Thread_local unsigned char *igzip_buffers[4];
static _Thread_local ZSTD_CCtx *zstd_ctx;

static const size_t igzip_buffer_size[4] = {ISAL_DEF_LVL0_DEFAULT, ISAL_DEF_LVL1_DEFAULT, ISAL_DEF_LVL2_DEFAULT,
                                            ISAL_DEF_LVL3_DEFAULT};

/* Returns the compressed length, 0 when the output is too small, or (size_t)-1 without memory. */
static size_t compress_igzip(int level, const void *in, size_t in_len, void *out, size_t out_len) {
  if (!igzip_buffers[level]) igzip_buffers[level] = malloc(igzip_buffer_size[level]);
  if (!igzip_buffers[level]) return (size_t)-1;
  struct isal_zstream s;
  isal_deflate_stateless_init(&s);
  s.level = (uint32_t)level;
  s.level_buf = igzip_buffers[level];
  s.level_buf_size = (uint32_t)igzip_buffer_size[level];
  s.gzip_flag = IGZIP_GZIP;
  s.end_of_stream = 1;
  s.flush = NO_FLUSH;
  s.next_in = (uint8_t *)in;
  s.avail_in = (uint32_t)in_len;
  s.next_out = out;
  s.avail_out = (uint32_t)out_len;
  return isal_deflate_stateless(&s) == COMP_OK ? s.total_out : 0;
}

static size_t compress_libdeflate(int level, const void *in, size_t in_len, void *out, size_t out_len) {
  if (!deflaters[level]) deflaters[level] = libdeflate_alloc_compressor(level);
  if (!deflaters[level]) return (size_t)-1;
  return libdeflate_gzip_compress(deflaters[level], in, in_len, out, out_len);
}

static size_t compress_zstd(int level, const void *in, size_t in_len, void *out, size_t out_len) {
  if (!zstd_ctx) zstd_ctx = ZSTD_createCCtx();
  if (!zstd_ctx) return (size_t)-1;
  ZSTD_CCtx_reset(zstd_ctx, ZSTD_reset_session_only);
  ZSTD_CCtx_setParameter(zstd_ctx, ZSTD_c_compressionLevel, level);
  /* A checksum per frame lets `zstd -t` (and every reader) verify each block. */
  ZSTD_CCtx_setParameter(zstd_ctx, ZSTD_c_checksumFlag, 1);
  size_t n = ZSTD_compress2(zstd_ctx, out, out_len, in, in_len);
  return ZSTD_isError(n) ? 0 : n;
}

/* A deflate stream of stored blocks: 5 bytes per block of at most 65535 bytes, plus the gzip
 * header and trailer; both engines fall back to stored blocks for incompressible data. */
static size_t deflate_bound(size_t len) { return len + 5 * (len / 16383 + 1) + 64; }

static size_t bound(int engine, size_t len) {
  return engine == ENGINE_ZSTD ? ZSTD_compressBound(len) : deflate_bound(len);
}

/* ---- async job ---------------------------------------------------------------------------- */

typedef struct {
  napi_async_work work;
  napi_ref refs[3]; /* input, output, callback */
  const void *input;
  size_t input_len;
  void *output;
  size_t output_len;
  int engine, level;
  size_t result;
} job_t;

static void execute(napi_env env, void *data) {
  (void)env;
  job_t *j = data;
  switch (j->engine) {
  case ENGINE_IGZIP:
    j->result = compress_igzip(j->level, j->input, j->input_len, j->output, j->output_len);
    break;
  case ENGINE_LIBDEFLATE:
    j->result = compress_libdeflate(j->level, j->input, j->input_len, j->output, j->output_len);
    break;
  default:
    j->result = compress_zstd(j->level, j->input, j->input_len, j->output, j->output_len);
  }
}

static void complete(napi_env env, napi_status status, void *data) {
  job_t *j = data;
  const char *failure = NULL;
  if (status != napi_ok) failure = "compression job was cancelled";
  else if (j->result == (size_t)-1) failure = "out of memory allocating a compressor";
  else if (j->result == 0) failure = "compression failed (output buffer too small?)";
  napi_async_work work = j->work;
  napi_ref refs[3] = {j->refs[0], j->refs[1], j->refs[2]};
  double result = (double)j->result;
  free(j);
  nbackup_finish_job(env, work, refs, failure, result);
}

/* ---- arguments ---------------------------------------------------------------------------- */

static int fail(napi_env env, const char *message) {
  napi_throw_type_error(env, NULL, message);
  return 0;
}

static int get_buffer(napi_env env, napi_value v, void **data, size_t *len) {
  bool is_buffer = false;
  if (napi_is_buffer(env, v, &is_buffer) != napi_ok || !is_buffer) return fail(env, "input and output must be Buffers");
  return napi_get_buffer_info(env, v, data, len) == napi_ok || fail(env, "cannot read a Buffer");
}

static int get_engine(napi_env env, napi_value v, int *engine) {
  int32_t e = -1;
  if (napi_get_value_int32(env, v, &e) != napi_ok || e < ENGINE_IGZIP || e > ENGINE_ZSTD) return fail(env, "engine must be 0, 1 or 2");
  *engine = e;
  return 1;
}

static napi_value js_compress(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5) {
    fail(env, "compress(engine, input, output, level, callback)");
    return NULL;
  }
  job_t tmp = {0};
  int32_t level = -1;
  napi_valuetype t;
  if (!get_engine(env, argv[0], &tmp.engine) || !get_buffer(env, argv[1], (void **)&tmp.input, &tmp.input_len) ||
      !get_buffer(env, argv[2], &tmp.output, &tmp.output_len))
    return NULL;
  if (napi_get_value_int32(env, argv[3], &level) != napi_ok || level < min_level[tmp.engine] || level > max_level[tmp.engine]) {
    napi_throw_range_error(env, NULL, "level out of range for this engine");
    return NULL;
  }
  if (napi_typeof(env, argv[4], &t) != napi_ok || t != napi_function) {
    fail(env, "callback must be a function");
    return NULL;
  }
  if (tmp.input_len > 0xFFFFFFFFu || tmp.output_len > 0xFFFFFFFFu) {
    napi_throw_range_error(env, NULL, "blocks must be smaller than 4 GiB");
    return NULL;
  }
  job_t *j = malloc(sizeof(job_t));
  if (!j) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  *j = tmp;
  j->level = level;
  nbackup_queue_job(env, argv[1], argv[2], argv[4], "nbackup:compress", execute, complete, j, j->refs, &j->work);
  return NULL;
}

static napi_value js_bound(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  int engine;
  double len = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || !get_engine(env, argv[0], &engine)) return NULL;
  if (napi_get_value_double(env, argv[1], &len) != napi_ok || !(len >= 0) || len > 4294967295.0) {
    napi_throw_range_error(env, NULL, "bound(engine, length) needs a length below 4 GiB");
    return NULL;
  }
  napi_create_double(env, (double)bound(engine, (size_t)len), &result);
  return result;
}

static napi_value js_versions(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_string_utf8(env, NBACKUP_ISAL_VERSION, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, out, "isal", v);
  napi_create_string_utf8(env, LIBDEFLATE_VERSION_STRING, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, out, "libdeflate", v);
  napi_create_string_utf8(env, ZSTD_versionString(), NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, out, "zstd", v);
  return out;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"compress", NULL, js_compress, NULL, NULL, NULL, napi_enumerable, NULL},
      {"bound", NULL, js_bound, NULL, NULL, NULL, napi_enumerable, NULL},
      {"versions", NULL, js_versions, NULL, NULL, NULL, napi_enumerable, NULL},
      {"zstdFrame", NULL, js_zstd_frame, NULL, NULL, NULL, napi_enumerable, NULL},
      {"zstdDecompress", NULL, js_zstd_decompress, NULL, NULL, NULL, napi_enumerable, NULL},
      {"gzipDecompress", NULL, js_gzip_decompress, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok) return NULL;
  return exports;
}
