/*
 * listDir: one directory's entries, sorted by name bytes, in two compact buffers. Node's
 * readdirSync makes a Dirent object and a Buffer per entry, ~550 bytes each: a directory of a
 * million files took ~550 MiB and 3.3 s to list. Here an entry costs its name, a NUL and a type
 * byte, and the scanner hands runs of files to the packer as slices of `names`, copying nothing.
 *
 * JS API (see src/agent/pipeline/dir-listing.ts):
 *   listDir(dir: Buffer | number) → [names: Buffer, types: Buffer]
 *     dir    the directory's path, or a descriptor open on it (read through a duplicate, from the
 *            start; the caller's descriptor stays open and unmoved as far as it is concerned).
 *     names  every entry's name followed by a NUL, "." and ".." left out, in byte order (memcmp,
 *            then the shorter first: Buffer.compare's order);
 *     types  one byte per entry, in the same order: the d_type the kernel gave (DT_REG, DT_DIR,
 *            DT_LNK, ... or DT_UNKNOWN, which the caller settles with lstat).
 *   Throws an Error with `code` (ENOENT, EACCES, ENOTDIR, ...) when the directory cannot be opened
 *   or read to its end.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "list-dir.h"

typedef struct {
  size_t off;
  uint16_t len;
  uint8_t type;
} entry_t;

typedef struct {
  char *names; /* each name, not NUL-ended, one after another */
  size_t names_len, names_cap;
  entry_t *entries;
  size_t count, cap;
} listing_t;

static int by_name(const void *pa, const void *pb, void *names) {
  const entry_t *a = pa, *b = pb;
  const char *base = names;
  size_t n = a->len < b->len ? a->len : b->len;
  int c = memcmp(base + a->off, base + b->off, n);
  return c != 0 ? c : (int)a->len - (int)b->len;
}

static int grow(void **p, size_t *cap, size_t need, size_t unit) {
  if (need <= *cap) return 0;
  size_t next = *cap ? *cap : 256;
  while (next < need) next *= 2;
  void *q = realloc(*p, next * unit);
  if (!q) return -1;
  *p = q;
  *cap = next;
  return 0;
}

/* Reads every entry of the directory `path`, or of the descriptor `fd` when it is not -1, into `l`;
 * 0, or an errno. */
static int read_all(const char *path, int fd, listing_t *l) {
  DIR *d = NULL;
  if (fd >= 0) {
    int dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dupfd < 0) return errno;
    d = fdopendir(dupfd);
    if (!d) {
      int err = errno;
      close(dupfd);
      return err;
    }
    rewinddir(d);
  } else {
    d = opendir(path);
  }
  if (!d) return errno;
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (!e) break;
    const char *n = e->d_name;
    if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0'))) continue;
    size_t len = strlen(n);
    if (grow((void **)&l->names, &l->names_cap, l->names_len + len, 1) || grow((void **)&l->entries, &l->cap, l->count + 1, sizeof(entry_t))) {
      closedir(d);
      return ENOMEM;
    }
    memcpy(l->names + l->names_len, n, len);
    l->entries[l->count++] = (entry_t){.off = l->names_len, .len = (uint16_t)len, .type = e->d_type};
    l->names_len += len;
  }
  int err = errno;
  closedir(d);
  return err;
}

static napi_value throw_code(napi_env env, int err) {
  const char *code = strerrorname_np(err);
  if (!code) code = "EIO";
  napi_value c, m, error;
  char message[160];
  snprintf(message, sizeof(message), "%s: %s", code, strerror(err));
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, c, m, &error);
  napi_throw(env, error);
  return NULL;
}

napi_value js_list_dir(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool is_buffer = false;
  char *data = NULL;
  size_t plen = 0;
  int32_t fd = -1;
  char path[PATH_MAX] = "";
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) goto usage;
  if (napi_get_value_int32(env, argv[0], &fd) == napi_ok) {
    if (fd < 0) goto usage;
  } else {
    if (napi_is_buffer(env, argv[0], &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, argv[0], (void **)&data, &plen) != napi_ok) goto usage;
    if (plen >= PATH_MAX || memchr(data, 0, plen)) return throw_code(env, plen >= PATH_MAX ? ENAMETOOLONG : ENOENT);
    memcpy(path, data, plen);
    path[plen] = '\0';
  }

  listing_t l = {0};
  int err = read_all(path, fd, &l);
  napi_value result = NULL;
  if (err) {
    throw_code(env, err);
    goto done;
  }
  if (l.count > 1) qsort_r(l.entries, l.count, sizeof(entry_t), by_name, l.names);
  napi_value names, types;
  char *out = NULL, *tout = NULL;
  if (napi_create_buffer(env, l.names_len + l.count, (void **)&out, &names) != napi_ok ||
      napi_create_buffer(env, l.count, (void **)&tout, &types) != napi_ok || napi_create_array_with_length(env, 2, &result) != napi_ok) {
    result = NULL;
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) throw_code(env, ENOMEM);
    goto done;
  }
  size_t at = 0;
  for (size_t i = 0; i < l.count; i++) {
    memcpy(out + at, l.names + l.entries[i].off, l.entries[i].len);
    at += l.entries[i].len;
    out[at++] = '\0';
    tout[i] = (char)l.entries[i].type;
  }
  napi_set_element(env, result, 0, names);
  napi_set_element(env, result, 1, types);
done:
  free(l.names);
  free(l.entries);
  return result;
usage:
  napi_throw_type_error(env, NULL, "listDir(dir: Buffer | descriptor)");
  return NULL;
}
