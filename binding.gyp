{
  "variables": {
    "has_codec_libs": "<!(pkg-config --exists libisal libdeflate libzstd && echo 1 || echo 0)"
  },
  "targets": [
    {
      "target_name": "nbackup_fs",
      "sources": ["src/native/fs-addon.c", "src/native/read-small.c", "src/native/pack-files.c", "src/native/list-dir.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-std=gnu11", "-Wall", "-Wno-unused-parameter"],
      "cflags!": ["-O3"]
    }
  ],
  "conditions": [
    ["has_codec_libs==1", {
      "targets": [
        {
          "target_name": "nbackup_codec",
          "sources": ["src/native/codecs.c", "src/native/decompress.c"],
          "defines": ["NAPI_VERSION=8", "NBACKUP_ISAL_VERSION=\"<!(pkg-config --modversion libisal)\""],
          "cflags": ["-O2", "-std=gnu11", "-Wall", "-Wno-unused-parameter", "<!@(pkg-config --cflags libisal libdeflate libzstd)"],
          "cflags!": ["-O3"],
          "libraries": ["<!@(pkg-config --libs libisal libdeflate libzstd)"]
        }
      ]
    }]
  ]
}
