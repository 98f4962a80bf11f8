/* How a pool job of the codec addon (codecs.c, decompress.c) ends: the callback hears
 * (Error(failure)) or (null, result), every reference the job held is released and the work freed. */
#ifndef NBACKUP_JOB_H
#define NBACKUP_JOB_H
#include <node_api.h>

static inline void nbackup_finish_job(napi_env env, napi_async_work work, napi_ref refs[3], const char *failure, double result) {
  napi_value callback, global, argv[2], ignored;
  napi_get_reference_value(env, refs[2], &callback);
  napi_get_global(env, &global);
  if (failure) {
    napi_value msg;
    napi_create_string_utf8(env, failure, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &argv[0]);
    napi_get_undefined(env, &argv[1]);
  } else {
    napi_get_null(env, &argv[0]);
    napi_create_double(env, result, &argv[1]);
  }
  for (int i = 0; i < 3; i++) napi_delete_reference(env, refs[i]);
  napi_delete_async_work(env, work);
  napi_call_function(env, global, callback, 2, argv, &ignored);
}
#endif
