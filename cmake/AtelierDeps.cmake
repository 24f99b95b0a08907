# Third-party dependencies. LibTorch comes either from the torch wheel's folder (ATELIER_TORCH_ROOT) or
# from its CMake package (the wheel with ATELIER_TORCH_CUDA for CUDA builds, or a LibTorch 2.x on CMAKE_PREFIX_PATH).
find_package(Threads REQUIRED)
# Before LibTorch: its CMake package (CUDA builds) defines protobuf::libprotobuf as an empty stand-in
# unless the real one exists, and the ONNX export links protobuf through that name.
find_package(Protobuf REQUIRED)

if(ATELIER_TORCH_ROOT AND NOT ATELIER_TORCH_CUDA)
  # CPU build against the wheel: link libtorch_cpu + libc10 directly. The wheel's TorchConfig would
  # also pull in libtorch_cuda and the whole CUDA runtime, which a CPU build never loads.
  set(_torch_lib "${ATELIER_TORCH_ROOT}/lib")
  if(NOT EXISTS "${_torch_lib}/libtorch_cpu.so")
    message(FATAL_ERROR "ATELIER_TORCH_ROOT=${ATELIER_TORCH_ROOT}: no lib/libtorch_cpu.so there")
  endif()
  add_library(atelier_torch INTERFACE)
  target_include_directories(atelier_torch SYSTEM INTERFACE
    "${ATELIER_TORCH_ROOT}/include" "${ATELIER_TORCH_ROOT}/include/torch/csrc/api/include")
  target_link_libraries(atelier_torch INTERFACE
    "${_torch_lib}/libtorch_cpu.so" "${_torch_lib}/libc10.so" Threads::Threads)
  target_compile_definitions(atelier_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
  set(CMAKE_BUILD_RPATH "${_torch_lib}")
  set(CMAKE_INSTALL_RPATH "${_torch_lib}")
else()
  if(ATELIER_TORCH_ROOT)
    list(APPEND CMAKE_PREFIX_PATH "${ATELIER_TORCH_ROOT}/share/cmake")
  endif()
  find_package(Torch REQUIRED)
  add_library(atelier_torch INTERFACE)
  target_link_libraries(atelier_torch INTERFACE ${TORCH_LIBRARIES})
  target_compile_options(atelier_torch INTERFACE ${TORCH_CXX_FLAGS})
  if(ATELIER_TORCH_CUDA)
    # libtorch_cuda's own dependencies (cuSPARSELt, cuFile, NVSHMEM: wheels beside torch) are the run-time
    # machine's business: a build machine without them still links.
    target_link_options(atelier_torch INTERFACE "LINKER:--allow-shlib-undefined")
  endif()
endif()

# NCCL for data-parallel CUDA tensors: the header of the nvidia-nccl wheel that the torch wheel pins (beside
# torch in site-packages), or one on the include path. It must be that version: it shapes the declarations
# of LibTorch's ProcessGroupNCCL. Without it a CUDA build all-reduces CUDA tensors through Gloo.
if(ATELIER_TORCH_CUDA)
  find_path(ATELIER_NCCL_INCLUDE_DIR nccl.h HINTS "${ATELIER_TORCH_ROOT}/../nvidia/nccl/include")
  if(ATELIER_NCCL_INCLUDE_DIR)
    message(STATUS "NCCL header: ${ATELIER_NCCL_INCLUDE_DIR} (data-parallel CUDA tensors go through NCCL)")
  else()
    message(STATUS "NCCL header not found: data-parallel CUDA tensors go through Gloo")
  endif()
endif()

# Debian's minimal OpenCV packages (core, imgproc) ship no CMake config: use the full package's config
# when present, else find the headers and the two libraries directly.
find_package(OpenCV QUIET COMPONENTS core imgproc)
if(NOT OpenCV_FOUND)
  find_path(OPENCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4 REQUIRED)
  foreach(component core imgproc)
    find_library(OPENCV_${component}_LIBRARY opencv_${component} REQUIRED)
    add_library(opencv_${component} UNKNOWN IMPORTED)
    set_target_properties(opencv_${component} PROPERTIES IMPORTED_LOCATION "${OPENCV_${component}_LIBRARY}"
                          INTERFACE_INCLUDE_DIRECTORIES "${OPENCV_INCLUDE_DIR}")
  endforeach()
endif()
find_package(nlohmann_json 3.10 REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)  # SHA-256 of base models (adapter files)
find_path(STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb REQUIRED)
find_library(STB_LIBRARY stb)
add_library(atelier_stb INTERFACE)
target_include_directories(atelier_stb SYSTEM INTERFACE "${STB_INCLUDE_DIR}")
if(STB_LIBRARY)
  target_link_libraries(atelier_stb INTERFACE "${STB_LIBRARY}")
  target_compile_definitions(atelier_stb INTERFACE ATELIER_STB_LIBRARY=1)
endif()
find_package(CLI11 QUIET CONFIG)
if(NOT CLI11_FOUND)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  target_include_directories(CLI11::CLI11 INTERFACE "${CLI11_INCLUDE_DIR}")
endif()
