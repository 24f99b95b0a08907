// stb_image compiled into the image fuzzer itself, so the decoder carries the fuzzer's instrumentation.
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
