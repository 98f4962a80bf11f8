/*
 * packFiles: a run of small regular files of one directory archived in one call — each opened
 * relative to the directory, read into the packer's block behind its ustar header, and its index
 * line written — so that the common member of a tree costs system calls and no JavaScript.
 * Anything out of the ordinary is handed back to the packer's general way, file by file.
 *
 * JS API (see src/agent/pipeline/file-run.ts):
 *   packFiles(dir: Buffer, prefix: Buffer, names: Buffer, at: number, block: Buffer, pos: number,
 *             tarBase: number, lines: Buffer, state: Float64Array(8)) → status
 *   dir      the directory's path; prefix the member-name prefix of its entries ('' or 'a/b/').
 *   names    the entries' names, each ended by a NUL; the call starts with the one at byte `at`.
 *   block    the packer's block, filled from `pos`; tarBase is the tar offset of block[0].
 *   lines    where index lines ([offset,"0",size,mode,mtime,"name"]\n) are written.
 *   state    out: [at, pos, lines used, files packed, bytes read, fd, size, size after].
 *   status   DONE      every name is packed; state[0] is the end of `names`.
 *            LINES     `lines` is full; state[0] is the next name to pack.
 *            TAKE      the packer takes the name at state[0] itself: open as descriptor state[5]
 *                      (or -1 when it is not open) — a failed open, not a small plain file, too big
 *                      for the room left in the block, a hard link, holes, a name or number
 *                      ustar cannot hold, a short read.
 *            CHANGED   the name at state[0] was packed, but its size or mtime changed while it was
 *                      read (state[6] → state[7]): the packer says so.
 *            NO_DIR    the directory cannot be opened (or its path or name is longer than PATH_MAX);
 *                      the packer takes every name itself.
 *   The files are opened O_NOFOLLOW|O_NONBLOCK, like the packer's own open.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "read-small.h"

enum { ST_AT, ST_POS, ST_LINES, ST_FILES, ST_BYTES, ST_FD, ST_SIZE, ST_SIZE_AFTER, ST_LEN };
enum { DONE = 0, LINES = 1, TAKE = 2, CHANGED = 3, NO_DIR = -1 };

#define MAX_OCTAL_7 07777777L
#define MAX_OCTAL_11 077777777777L

/* value as width-1 zero-padded octal digits and a NUL, as the packer's writeOctal. */
static void octal(char *field, int width, unsigned long value) {
  field[width - 1] = '\0';
  for (int i = width - 2; i >= 0; i--) {
    field[i] = (char)('0' + (value & 7));
    value >>= 3;
  }
}

/* Bytes 0x01..0x7f only, as tar-header.ts's isAscii. */
static int is_ascii(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] == 0 || (unsigned char)s[i] > 0x7f) return 0;
  return 1;
}

/* Where the ustar prefix ends (the '/' index), -1 for no prefix, -2 when it cannot be split:
 * the same rule as splitUstarName in tar-header.ts. */
static long ustar_split(const char *name, size_t len) {
  if (len <= 100) return -1;
  for (size_t i = 0; i < len; i++) {
    if (name[i] != '/') continue;
    if (i > 155) return -2;
    size_t tail = len - i - 1;
    if (tail <= 100 && tail > 0) return (long)i;
  }
  return -2;
}

static void ustar_header(char *h, const char *name, size_t len, long split, const struct stat *st) {
  memset(h, 0, 512);
  if (split < 0) {
    memcpy(h, name, len);
  } else {
    memcpy(h, name + split + 1, len - (size_t)split - 1);
    memcpy(h + 345, name, (size_t)split);
  }
  octal(h + 100, 8, st->st_mode & 07777);
  octal(h + 108, 8, st->st_uid);
  octal(h + 116, 8, st->st_gid);
  octal(h + 124, 12, (unsigned long)st->st_size);
  octal(h + 136, 12, (unsigned long)st->st_mtim.tv_sec);
  memset(h + 148, ' ', 8);
  h[156] = '0';
  memcpy(h + 257, "ustar\0" "00", 8);
  octal(h + 329, 8, 0);
  octal(h + 337, 8, 0);
  unsigned long sum = 0;
  for (int i = 0; i < 512; i++) sum += (unsigned char)h[i];
  octal(h + 148, 7, sum);
  h[155] = ' ';
}

/* An ASCII name as JSON.stringify writes it. */
static size_t json_string(char *out, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  out[o++] = '"';
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
    } else if (c >= 0x20) {
      out[o++] = (char)c;
    } else {
      out[o++] = '\\';
      switch (c) {
      case '\b': out[o++] = 'b'; break;
      case '\t': out[o++] = 't'; break;
      case '\n': out[o++] = 'n'; break;
      case '\f': out[o++] = 'f'; break;
      case '\r': out[o++] = 'r'; break;
      default:
        memcpy(out + o, "u00", 3);
        o += 3;
        out[o++] = hex[c >> 4];
        out[o++] = hex[c & 15];
      }
    }
  }
  out[o++] = '"';
  return o;
}

static size_t decimal(char *out, unsigned long long v) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  return n;
}

/* The member's index line (index-format.ts's memberLine) at `out`; its length. */
static size_t index_line(char *out, unsigned long long offset, const struct stat *st, const char *name, size_t len) {
  size_t o = 0;
  out[o++] = '[';
  o += decimal(out + o, offset);
  memcpy(out + o, ",\"0\",", 5);
  o += 5;
  o += decimal(out + o, (unsigned long long)st->st_size);
  out[o++] = ',';
  o += decimal(out + o, st->st_mode & 07777);
  out[o++] = ',';
  o += decimal(out + o, (unsigned long long)st->st_mtim.tv_sec);
  out[o++] = ',';
  o += json_string(out + o, name, len);
  out[o++] = ']';
  out[o++] = '\n';
  return o;
}

typedef struct {
  char *block;
  size_t block_len, pos;
  char *lines;
  size_t lines_len, lines_used;
  double tar_base;
  double *state;
} run_t;

/* Packs the open file `fd` named `name` when it is a small plain file: DONE, CHANGED or TAKE. */
static int pack_one(run_t *r, int fd, const char *name, size_t len, long split) {
  if (r->pos + 512 > r->block_len) return TAKE;
  char *at = r->block + r->pos;
  struct stat st;
  off_t size_after;
  int changed;
  if (nbackup_read_small(fd, at + 512, r->block_len - r->pos - 512, &st, &size_after, &changed) != 0) return TAKE;
  /* Numbers ustar cannot hold need PAX records: the general way (the bytes read are not kept). */
  if (st.st_uid > MAX_OCTAL_7 || st.st_gid > MAX_OCTAL_7 || st.st_mtim.tv_sec < 0 || st.st_mtim.tv_sec > MAX_OCTAL_11) return TAKE;
  ustar_header(at, name, len, split, &st);
  const size_t size = (size_t)st.st_size;
  r->lines_used += index_line(r->lines + r->lines_used, (unsigned long long)(r->tar_base + (double)r->pos), &st, name, len);
  r->pos += 512 + ((size + 511) & ~(size_t)511);
  r->state[ST_FILES] += 1;
  r->state[ST_BYTES] += (double)size;
  if (!changed) return DONE;
  r->state[ST_SIZE] = (double)size;
  r->state[ST_SIZE_AFTER] = (double)size_after;
  return CHANGED;
}

static int pack_run(run_t *r, int dirfd, const char *prefix, size_t prefix_len, const char *names, size_t names_len, size_t at) {
  char name[PATH_MAX + 256];
  memcpy(name, prefix, prefix_len);
  while (at < names_len) {
    r->state[ST_AT] = (double)at;
    const char *base = names + at;
    const size_t base_len = strnlen(base, names_len - at);
    const size_t len = prefix_len + base_len;
    /* Worst case of the index line: numbers, brackets, and 6 bytes per escaped name byte. */
    const size_t line_room = 96 + 6 * len;
    if (base_len == names_len - at || len > PATH_MAX) return TAKE;
    if (r->lines_used + line_room > r->lines_len) return r->lines_used > 0 ? LINES : TAKE;
    memcpy(name + prefix_len, base, base_len);
    const long split = ustar_split(name, len);
    if (!is_ascii(name, len) || split == -2) return TAKE;
    const int fd = openat(dirfd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return TAKE;
    const int status = pack_one(r, fd, name, len, split);
    if (status == TAKE) {
      r->state[ST_FD] = fd;
      return TAKE;
    }
    close(fd);
    if (status == CHANGED) return CHANGED;
    at += base_len + 1;
  }
  r->state[ST_AT] = (double)at;
  return DONE;
}

static napi_value number(napi_env env, double v) {
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}

napi_value js_pack_files(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  void *dir_data, *prefix_data, *names_data, *block_data, *lines_data, *state_data;
  size_t dir_len, prefix_len, names_len, block_len, lines_len, state_len, state_offset;
  double at_d = -1, pos_d = -1, base_d = -1;
  napi_typedarray_type state_type;
  napi_value state_buffer;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 9 ||
      napi_get_buffer_info(env, argv[0], &dir_data, &dir_len) != napi_ok || napi_get_buffer_info(env, argv[1], &prefix_data, &prefix_len) != napi_ok ||
      napi_get_buffer_info(env, argv[2], &names_data, &names_len) != napi_ok || napi_get_value_double(env, argv[3], &at_d) != napi_ok ||
      napi_get_buffer_info(env, argv[4], &block_data, &block_len) != napi_ok || napi_get_value_double(env, argv[5], &pos_d) != napi_ok ||
      napi_get_value_double(env, argv[6], &base_d) != napi_ok || napi_get_buffer_info(env, argv[7], &lines_data, &lines_len) != napi_ok ||
      napi_get_typedarray_info(env, argv[8], &state_type, &state_len, &state_data, &state_buffer, &state_offset) != napi_ok ||
      state_type != napi_float64_array || state_len < ST_LEN || !(at_d >= 0) || at_d > (double)names_len || !(pos_d >= 0) ||
      pos_d > (double)block_len || !(base_d >= 0) || dir_len == 0 || memchr(dir_data, '\0', dir_len) != NULL ||
      memchr(prefix_data, '\0', prefix_len) != NULL) {
    napi_throw_type_error(env, NULL,
                          "packFiles(dir, prefix, names, at, block, pos, tarBase, lines, state) needs paths without NUL, a block "
                          "position within it and a Float64Array(8)");
    return NULL;
  }
  double *state = state_data;
  for (int i = 0; i < ST_LEN; i++) state[i] = 0;
  state[ST_AT] = at_d;
  state[ST_POS] = pos_d;
  state[ST_FD] = -1;
  /* Names this long need PAX records, and such a path is reached through a handle: not for here. */
  if (dir_len >= PATH_MAX || prefix_len >= PATH_MAX) return number(env, NO_DIR);
  char dir[PATH_MAX];
  memcpy(dir, dir_data, dir_len);
  dir[dir_len] = '\0';
  const int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) return number(env, NO_DIR);
  run_t r = {block_data, block_len, (size_t)pos_d, lines_data, lines_len, 0, base_d, state};
  const int status = pack_run(&r, dirfd, prefix_data, prefix_len, names_data, names_len, (size_t)at_d);
  close(dirfd);
  state[ST_POS] = (double)r.pos;
  state[ST_LINES] = (double)r.lines_used;
  return number(env, status);
}
