/* How a pool job of the codec addon (codecs.c, decompress.c) starts and ends. Start: the input,
 * output and callback values are referenced and the work queued; 0 (with a JS error thrown) when
 * that fails. End: the callback hears (Error(failure)) or (null, result), every reference the job
 * held is released and the work freed. */
#ifndef NBACKUP_JOB_H
#define NBACKUP_JOB_H
#include <node_api.h>

static inline int nbackup_queue_job(napi_env env, napi_value input, napi_value output, napi_value callback, const char *name,
                                    napi_async_execute_callback execute, napi_async_complete_callback complete, void *data,
                                    napi_ref refs[3], napi_async_work *work) {
  napi_value resource_name;
  if (napi_create_reference(env, input, 1, &refs[0]) != napi_ok || napi_create_reference(env, output, 1, &refs[1]) != napi_ok ||
      napi_create_reference(env, callback, 1, &refs[2]) != napi_ok ||
      napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_create_async_work(env, NULL, resource_name, execute, complete, data, work) != napi_ok || napi_queue_async_work(env, *work) != napi_ok) {
    napi_throw_error(env, NULL, "cannot queue a codec job");
    return 0;
  }
  return 1;
}

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
