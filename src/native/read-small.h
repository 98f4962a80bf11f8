/* nbackup_fs: small regular files opened, checked, read and closed in a single call: one
 * (read-small.c), or a run of one directory's files with their tar headers (pack-files.c). */
#ifndef NBACKUP_READ_SMALL_H
#define NBACKUP_READ_SMALL_H
#include <node_api.h>
#include <sys/stat.h>

napi_value js_read_small_file(napi_env env, napi_callback_info info);
napi_value js_pack_files(napi_env env, napi_callback_info info);

/* Reads `size` bytes from the start of `fd` into `dst`; 0 when all of them came, -1 otherwise. */
int nbackup_read_whole(int fd, char *dst, size_t size);

/* The open `fd` read whole into `dst`, zero-padded to a multiple of 512 within `room`, when it is a
 * small plain file: a regular file with one link, no holes, that fits. 0 then, with its fstat in
 * *st, the size after the read and whether size or mtime changed meanwhile; -1 otherwise (the
 * caller takes the file the general way; `dst` holds nothing to keep). */
int nbackup_read_small(int fd, char *dst, size_t room, struct stat *st, off_t *size_after, int *changed);

#endif
