{
  "targets": [
    {
      "target_name": "nbackup_gzip",
      "sources": [
        "src/native/gzip.c",
        "src/native/libdeflate/lib/deflate_compress.c",
        "src/native/libdeflate/lib/gzip_compress.c",
        "src/native/libdeflate/lib/crc32.c",
        "src/native/libdeflate/lib/utils.c",
        "src/native/libdeflate/lib/x86/cpu_features.c",
        "src/native/libdeflate/lib/arm/cpu_features.c"
      ],
      "include_dirs": ["src/native", "src/native/libdeflate"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-std=gnu11", "-Wno-sign-compare", "-Wno-unused-parameter"],
      "cflags!": ["-O3"]
    },
    {
      "target_name": "nbackup_fs",
      "sources": ["src/native/file-map.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-std=gnu11", "-Wall", "-Wno-unused-parameter"],
      "cflags!": ["-O3"]
    }
  ]
}
