# Helpers shared by the engine targets.
#
# One precompiled header (LibTorch) is built once for atelier_core and reused by every other target
# that includes torch: that saves ~40% of the ~19 s a torch translation unit costs.

function(atelier_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()

# atelier_library(NAME <target> SOURCES ... DEPS ...): a static engine library rooted at the repository
# (headers are included as "core/x.h"), with the shared torch PCH.
function(atelier_library)
  cmake_parse_arguments(A "" "NAME" "SOURCES;DEPS" ${ARGN})
  add_library(${A_NAME} STATIC ${A_SOURCES})
  target_include_directories(${A_NAME} PUBLIC "${PROJECT_SOURCE_DIR}")
  target_link_libraries(${A_NAME} PUBLIC ${A_DEPS})
  atelier_warnings(${A_NAME})
  atelier_use_pch(${A_NAME})
endfunction()

function(atelier_use_pch target)
  if(target STREQUAL "atelier_core")
    target_precompile_headers(${target} PRIVATE "${PROJECT_SOURCE_DIR}/core/pch.h")
  else()
    target_precompile_headers(${target} REUSE_FROM atelier_core)
  endif()
endfunction()
