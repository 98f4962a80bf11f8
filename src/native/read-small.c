/*
 * readSmallFile: a small regular file opened, checked, read into the packer's block and closed
 * in one call. For trees of small files the packer's time goes to the five fs calls per file
 * (open, fstat, read, fstat, close) and the objects Node makes for each; here they are plain
 * system calls.
 *
 * JS API (see src/agent/pipeline/small-file.ts):
 *   readSmallFile(path: Buffer, block: Buffer, offset: number, room: number, meta: Float64Array)
 *     → number
 *   The file is opened O_NOFOLLOW|O_NONBLOCK, like the packer's own open.
 *   >= 0  the file was read whole: its size. Its bytes are at block[offset, offset + size), then
 *         zeros up to the next multiple of 512, all within `room` bytes. meta holds
 *         [mode, uid, gid, size, mtime seconds, changed (1 when size or mtime differ after the
 *         read), size after the read].
 *   -1    open failed; nothing is open (the caller opens it again to learn why, in its words).
 *   -2    the file is open as descriptor meta[7] and the caller takes it from there, the general
 *         way: it is not a regular file, or larger than `room` allows, has more than one link,
 *         may have holes, or did not read back whole.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "read-small.h"

enum { META_MODE, META_UID, META_GID, META_SIZE, META_MTIME, META_CHANGED, META_SIZE_AFTER, META_FD, META_LEN };
enum { OPEN_FAILED = -1, GENERAL = -2 };

static napi_value number(napi_env env, double v) {
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}

/* Reads `size` bytes from the start of `fd` into `dst`; 0 when all of them came, -1 otherwise. */
int nbackup_read_whole(int fd, char *dst, size_t size) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = pread(fd, dst + done, size - done, (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    done += (size_t)n;
  }
  return 0;
}

int nbackup_read_small(int fd, char *dst, size_t room, struct stat *st, off_t *size_after, int *changed) {
  if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode) || st->st_nlink > 1 || st->st_size < 0) return -1;
  const size_t size = (size_t)st->st_size;
  const size_t padded = (size + 511) & ~(size_t)511;
  /* Allocated blocks short of the size: it may have holes, which the general way maps. */
  if (padded > room || (size > 0 && (size_t)st->st_blocks * 512 < size)) return -1;
  if (nbackup_read_whole(fd, dst, size) != 0) return -1;
  memset(dst + size, 0, padded - size);
  struct stat after;
  if (fstat(fd, &after) != 0) {
    *changed = 1;
    *size_after = st->st_size;
  } else {
    *changed = after.st_size != st->st_size || after.st_mtim.tv_sec != st->st_mtim.tv_sec || after.st_mtim.tv_nsec != st->st_mtim.tv_nsec;
    *size_after = after.st_size;
  }
  return 0;
}

napi_value js_read_small_file(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  void *path_data = NULL, *block_data = NULL, *meta_data = NULL;
  size_t path_len = 0, block_len = 0, meta_len = 0;
  double offset_d = -1, room_d = -1;
  napi_typedarray_type meta_type;
  napi_value meta_buffer;
  size_t meta_offset;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 ||
      napi_get_buffer_info(env, argv[0], &path_data, &path_len) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &block_data, &block_len) != napi_ok ||
      napi_get_value_double(env, argv[2], &offset_d) != napi_ok || napi_get_value_double(env, argv[3], &room_d) != napi_ok ||
      napi_get_typedarray_info(env, argv[4], &meta_type, &meta_len, &meta_data, &meta_buffer, &meta_offset) != napi_ok ||
      meta_type != napi_float64_array || meta_len < META_LEN || !(offset_d >= 0) || !(room_d >= 0) ||
      offset_d + room_d > (double)block_len || path_len == 0 || path_len >= PATH_MAX) {
    napi_throw_type_error(env, NULL, "readSmallFile(path, block, offset, room, meta) needs a path, a block, a range within it and a Float64Array(8)");
    return NULL;
  }
  char path[PATH_MAX];
  memcpy(path, path_data, path_len);
  path[path_len] = '\0';
  if (memchr(path, '\0', path_len) != NULL) {
    napi_throw_type_error(env, NULL, "readSmallFile: the path holds a NUL byte");
    return NULL;
  }
  double *meta = meta_data;
  char *dst = (char *)block_data + (size_t)offset_d;
  const size_t room = (size_t)room_d;

  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return number(env, OPEN_FAILED);
  struct stat st;
  off_t size_after;
  int changed;
  if (nbackup_read_small(fd, dst, room, &st, &size_after, &changed) != 0) goto general;
  const size_t size = (size_t)st.st_size;
  close(fd);
  meta[META_MODE] = st.st_mode;
  meta[META_UID] = st.st_uid;
  meta[META_GID] = st.st_gid;
  meta[META_SIZE] = (double)size;
  meta[META_MTIME] = (double)st.st_mtim.tv_sec;
  meta[META_CHANGED] = changed;
  meta[META_SIZE_AFTER] = (double)size_after;
  return number(env, (double)size);
general:
  meta[META_FD] = fd;
  return number(env, GENERAL);
}
