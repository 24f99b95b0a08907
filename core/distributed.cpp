#include "core/distributed.h"

// Gloo's process group is compiled into libtorch_cpu; its header needs this switch and gloo's headers
// (Debian libgloo-dev: declarations only, the code is LibTorch's own).
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef ATELIER_NCCL
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

namespace atelier {
namespace {

int env_int(const std::function<const char*(const char*)>& getenv, const char* name, int min, int max) {
  const char* text = getenv(name);
  try {
    std::size_t used = 0;
    const long value = std::stol(text, &used);
    if (used == std::string(text).size() && value >= min && value <= max) return static_cast<int>(value);
  } catch (const std::logic_error&) {
  }
  fail("environment variable ", name, "='", text, "' is not an integer in [", min, ", ", max, "]");
}

// Gloo's errors say "Connection reset by peer" or "Timed out"; the user needs to hear what that means.
[[noreturn]] void fail_collective(const char* what, const ParallelEnvironment& env, const std::exception& e) {
  fail("data-parallel rank ", env.rank, " of ", env.world, ": ", what,
       " failed: another rank exited, was killed or stopped answering (timeout ", env.timeout.count(),
       " s); the last checkpoint is intact, run the job again with --resume (", e.what(), ")");
}

}  // namespace

ParallelEnvironment parallel_environment(const std::function<const char*(const char*)>& getenv_fn) {
  const std::function<const char*(const char*)> getenv =
      getenv_fn ? getenv_fn : [](const char* name) { return std::getenv(name); };
  ParallelEnvironment env;
  auto has = [&](const char* name) { return getenv(name) != nullptr && *getenv(name) != '\0'; };
  if (has("WORLD_SIZE")) {
    env.source = "torchrun";
    env.world = env_int(getenv, "WORLD_SIZE", 1, 65536);
    env.rank = has("RANK") ? env_int(getenv, "RANK", 0, env.world - 1) : 0;
    env.local_rank = has("LOCAL_RANK") ? env_int(getenv, "LOCAL_RANK", 0, 65535) : env.rank;
    env.local_world = has("LOCAL_WORLD_SIZE") ? env_int(getenv, "LOCAL_WORLD_SIZE", 1, 65536) : 1;
    env.agent_store =
        has("TORCHELASTIC_USE_AGENT_STORE") && std::string(getenv("TORCHELASTIC_USE_AGENT_STORE")) == "True";
    if (has("TORCHELASTIC_RESTART_COUNT"))
      env.restart_count = env_int(getenv, "TORCHELASTIC_RESTART_COUNT", 0, 1 << 30);
  } else if (has("SLURM_NTASKS") && has("SLURM_PROCID") && env_int(getenv, "SLURM_NTASKS", 1, 65536) > 1) {
    env.source = "SLURM";
    env.world = env_int(getenv, "SLURM_NTASKS", 1, 65536);
    env.rank = env_int(getenv, "SLURM_PROCID", 0, env.world - 1);
    env.local_rank = has("SLURM_LOCALID") ? env_int(getenv, "SLURM_LOCALID", 0, 65535) : 0;
  }
  if (env.world > 1 && env.rank > 0 && !has("MASTER_ADDR"))
    fail("environment variable MASTER_ADDR is not set: rank ", env.rank, " of ", env.world,
         " needs the address of rank 0 (torchrun sets it; in a SLURM script export the first node's name)");
  if (has("MASTER_ADDR")) env.master_addr = getenv("MASTER_ADDR");
  if (has("MASTER_PORT")) env.master_port = env_int(getenv, "MASTER_PORT", 1, 65535);
  if (has("ATELIER_DIST_TIMEOUT"))
    env.timeout = std::chrono::seconds(env_int(getenv, "ATELIER_DIST_TIMEOUT", 1, 86400));
  env.cuda_backend = nccl_available() ? "nccl" : "gloo";
  if (has("ATELIER_DIST_BACKEND")) {
    const std::string backend = getenv("ATELIER_DIST_BACKEND");
    if (backend != "nccl" && backend != "gloo")
      fail("environment variable ATELIER_DIST_BACKEND='", backend, "' is not nccl or gloo");
    if (backend == "nccl" && !nccl_available())
      fail(
          "environment variable ATELIER_DIST_BACKEND=nccl, but this build has no NCCL (a CUDA build "
          "-DATELIER_TORCH_CUDA=ON finds nccl.h in the nvidia-nccl wheel beside torch); use gloo");
    env.cuda_backend = backend;
  }
  return env;
}

bool nccl_available() {
#ifdef ATELIER_NCCL
  return true;
#else
  return false;
#endif
}

int free_loopback_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = s >= 0 && ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  if (s >= 0) ::close(s);
  if (!ok) fail("no free loopback port for a data-parallel rendezvous: ", std::strerror(errno));
  return ntohs(a.sin_port);
}

torch::Tensor shard_rows(const torch::Tensor& global, const Shard& shard) {
  if (shard.world == 1) return global;
  return global.narrow(0, shard.first(global.size(0)), shard.size(global.size(0)));
}

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> gloo;  // CPU tensors, and CUDA tensors without NCCL
  c10::intrusive_ptr<c10d::Backend> nccl;  // CUDA tensors (CUDA builds with NCCL)
  std::string nccl_refusal;                // why NCCL cannot carry this run's CUDA tensors, if it cannot

  c10d::Backend& for_tensor(const at::Tensor& t) {
    if (!t.is_cuda() || !nccl) return *gloo;
    if (!nccl_refusal.empty()) fail(nccl_refusal);
    return *nccl;
  }
};

ProcessGroup::ProcessGroup(const ParallelEnvironment& env) : env_(env), impl_(std::make_unique<Impl>()) {
  try {
    c10d::TCPStoreOptions o;
    o.port = static_cast<std::uint16_t>(env.master_port);
    o.isServer = env.rank == 0 && !env.agent_store;
    o.numWorkers = env.world;
    o.waitWorkers = true;  // clients count themselves in; the server waits for all
    o.timeout = env.timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
    impl_->store = tcp;
    if (env.agent_store)
      impl_->store =
          c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(env.restart_count), tcp);
    auto options = c10d::ProcessGroupGloo::Options::create(env.timeout);
    // Loopback for one machine; GLOO_SOCKET_IFNAME's interface, or the host name's address, across nodes.
    const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
    const bool local = env.master_addr == "localhost" || env.master_addr.rfind("127.", 0) == 0;
    options->devices.push_back(interface != nullptr && *interface != '\0'
                                   ? c10d::ProcessGroupGloo::createDeviceForInterface(interface)
                               : local ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                       : c10d::ProcessGroupGloo::createDefaultDevice());
    // Each backend keeps its keys under its own prefix of the one store, as torch.distributed does.
    impl_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", impl_->store), env.rank, env.world, options);
#ifdef ATELIER_NCCL
    if (env.cuda_backend == "nccl" && at::getNumGPUs() > 0) {  // LibTorch refuses NCCL without a GPU
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = env.timeout;
      impl_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::make_intrusive<c10d::PrefixStore>("nccl", impl_->store), env.rank, env.world, nccl_options);
      // NCCL takes one GPU per process and refuses two ranks on one device (it would fail at its first
      // collective with "Duplicate GPU detected"): say so, and what to do, before that.
      const int gpus = static_cast<int>(at::getNumGPUs());
      if (env.local_world > gpus)
        impl_->nccl_refusal = "data-parallel: " + std::to_string(env.local_world) + " processes on this machine but " +
                              std::to_string(gpus) +
                              " CUDA device(s), and NCCL takes one device per process: start at most " +
                              std::to_string(gpus) +
                              " process(es) per machine, or set ATELIER_DIST_BACKEND=gloo "
                              "(GPUs shared, CUDA tensors staged through the host)";
    }
#endif
  } catch (const std::exception& e) {
    fail("data-parallel rendezvous of rank ", env.rank, " of ", env.world, " at ", env.master_addr, ":",
         env.master_port, " (", env.source, ") failed within ", env.timeout.count(), " s: ", e.what());
  }
}

ProcessGroup::~ProcessGroup() {
  // NCCL's communicators are torn down explicitly (its watchdog thread otherwise complains at exit).
  if (impl_ && impl_->nccl) try {
      impl_->nccl->shutdown();
    } catch (const std::exception&) {
    }
}

std::string ProcessGroup::backend(const c10::Device& device) const {
  return device.is_cuda() && impl_->nccl ? "nccl" : "gloo";
}

void ProcessGroup::broadcast(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  try {
    for (const auto& t : tensors) {
      std::vector<at::Tensor> one{t.is_contiguous() ? t : t.contiguous()};
      impl_->for_tensor(one[0]).broadcast(one)->wait();
      if (!t.is_contiguous()) t.copy_(one[0]);
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail_collective("broadcast", env_, e);
  }
}

void ProcessGroup::average(const std::vector<torch::Tensor>& tensors, std::int64_t bucket_bytes) {
  torch::NoGradGuard no_grad;
  // Buckets of tensors of one dtype and device, each flattened into one buffer for a single all-reduce.
  std::map<std::pair<int, std::string>, std::vector<torch::Tensor>> groups;
  for (const auto& t : tensors) groups[{static_cast<int>(t.scalar_type()), t.device().str()}].push_back(t);
  auto reduce = [&](const std::vector<torch::Tensor>& bucket) {
    std::vector<torch::Tensor> flat;
    for (const auto& t : bucket) flat.push_back(t.reshape(-1));
    std::vector<at::Tensor> buffer{torch::cat(flat)};
    reduced_bytes_ += buffer[0].numel() * static_cast<std::int64_t>(buffer[0].element_size());
    c10d::Backend& backend = impl_->for_tensor(buffer[0]);
    try {
      backend.allreduce(buffer)->wait();
    } catch (const std::exception& e) {
      fail_collective("all-reduce", env_, e);
    }
    buffer[0].div_(env_.world);
    std::int64_t offset = 0;
    for (const auto& t : bucket) {
      t.copy_(buffer[0].narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  };
  for (const auto& [key, list] : groups) {
    std::vector<torch::Tensor> bucket;
    std::int64_t bytes = 0;
    for (const auto& t : list) {
      const std::int64_t size = t.numel() * static_cast<std::int64_t>(t.element_size());
      if (!bucket.empty() && bytes + size > bucket_bytes) {
        reduce(bucket);
        bucket.clear();
        bytes = 0;
      }
      bucket.push_back(t);
      bytes += size;
    }
    if (!bucket.empty()) reduce(bucket);
  }
}

torch::Tensor ProcessGroup::all_gather(const torch::Tensor& tensor) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> input{tensor.detach().contiguous()};
  std::vector<std::vector<at::Tensor>> output(1);
  for (int r = 0; r < env_.world; ++r) output[0].push_back(torch::empty_like(input[0]));
  c10d::Backend& backend = impl_->for_tensor(input[0]);
  try {
    backend.allgather(output, input)->wait();
  } catch (const std::exception& e) {
    fail_collective("all-gather", env_, e);
  }
  return torch::cat(output[0]);
}

torch::Tensor gather_batch(ProcessGroup* group, const torch::Tensor& local) {
  if (group == nullptr || group->world() == 1) return local;
  const auto all = group->all_gather(local);
  const auto w = static_cast<double>(group->world());
  const auto own = local * w - local.detach() * (w - 1);  // the value of `local`, w times its gradient
  const std::int64_t first = group->rank() * local.size(0), rest = all.size(0) - first - local.size(0);
  return torch::cat({all.narrow(0, 0, first), own, all.narrow(0, first + local.size(0), rest)});
}

constexpr unsigned kNoHook = ~0u;

struct GradientAverager::State {
  struct Bucket {
    std::vector<std::size_t> members;  // parameter indices
    std::vector<std::int64_t> offsets;
    torch::Tensor buffer;
    std::size_t pending = 0;
    c10::intrusive_ptr<c10d::Work> work;
  };
  ProcessGroup* group = nullptr;
  std::vector<torch::Tensor> params;
  std::vector<unsigned> hooks;
  std::vector<std::pair<std::size_t, std::size_t>> slot;  // parameter -> (bucket, member position)
  std::vector<Bucket> buckets;
  std::vector<bool> got;
  bool active = false;
  std::mutex mutex;

  void launch(Bucket& b) {
    std::vector<at::Tensor> one{b.buffer};
    group->reduced_bytes_ += b.buffer.numel() * static_cast<std::int64_t>(b.buffer.element_size());
    c10d::Backend& backend = group->impl_->for_tensor(one[0]);
    try {
      b.work = backend.allreduce(one);
    } catch (const std::exception& e) {
      fail_collective("gradient all-reduce", group->env_, e);
    }
  }
  void on_grad(std::size_t i, const torch::Tensor& g) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!active || got[i]) return;
    const auto [k, m] = slot[i];
    Bucket& b = buckets[k];
    b.buffer.narrow(0, b.offsets[m], g.numel()).copy_(g.detach().reshape(-1));
    got[i] = true;
    if (--b.pending == 0) launch(b);
  }
};

GradientAverager::GradientAverager(ProcessGroup& group, const std::vector<torch::Tensor>& params,
                                   std::int64_t bucket_bytes)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.group = &group;
  s.params = params;
  s.slot.resize(params.size());
  s.got.assign(params.size(), false);
  std::int64_t bytes = 0;
  for (std::size_t j = params.size(); j-- > 0;) {  // reverse: roughly the order backward reaches them
    const auto& p = params[j];
    const std::int64_t size = p.numel() * static_cast<std::int64_t>(p.element_size());
    const bool fits = !s.buckets.empty() && bytes + size <= bucket_bytes &&
                      s.params[s.buckets.back().members.front()].options().type_equal(p.options());
    if (!fits) {
      s.buckets.emplace_back();
      bytes = 0;
    }
    auto& b = s.buckets.back();
    s.slot[j] = {s.buckets.size() - 1, b.members.size()};
    b.offsets.push_back(b.members.empty() ? 0 : b.offsets.back() + params[b.members.back()].numel());
    b.members.push_back(j);
    bytes += size;
  }
  for (auto& b : s.buckets) {
    const auto& last = params[b.members.back()];
    b.buffer = torch::zeros({b.offsets.back() + last.numel()}, last.options().requires_grad(false));
  }
  std::weak_ptr<State> weak = state_;
  for (std::size_t i = 0; i < params.size(); ++i)  // a frozen parameter gets no gradient: zeros at finish()
    s.hooks.push_back(!params[i].requires_grad() ? kNoHook : params[i].register_hook([weak, i](const torch::Tensor& g) {
      if (auto state = weak.lock()) state->on_grad(i, g);
    }));
}

GradientAverager::~GradientAverager() {
  for (std::size_t i = 0; i < state_->params.size(); ++i)
    if (state_->hooks[i] != kNoHook) state_->params[i].remove_hook(state_->hooks[i]);
}

std::size_t GradientAverager::buckets() const {
  return state_->buckets.size();
}

void GradientAverager::begin() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  for (auto& b : state_->buckets) {
    b.pending = b.members.size();
    b.work.reset();
  }
  std::fill(state_->got.begin(), state_->got.end(), false);
  state_->active = true;
}

void GradientAverager::finish() {
  torch::NoGradGuard no_grad;
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  s.active = false;
  for (auto& b : s.buckets) {
    if (b.work) continue;
    for (std::size_t m = 0; m < b.members.size(); ++m)  // parameters backward did not reach: zeros
      if (!s.got[b.members[m]]) b.buffer.narrow(0, b.offsets[m], s.params[b.members[m]].numel()).zero_();
    s.launch(b);
  }
  for (auto& b : s.buckets) {
    try {
      b.work->wait();
    } catch (const std::exception& e) {
      fail_collective("gradient all-reduce", s.group->env_, e);
    }
    b.buffer.div_(s.group->world());
    for (std::size_t m = 0; m < b.members.size(); ++m) {
      auto& p = s.params[b.members[m]];
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      p.mutable_grad().copy_(b.buffer.narrow(0, b.offsets[m], p.numel()).view_as(p));
    }
  }
}

void ProcessGroup::barrier() {
  try {
    impl_->gloo->barrier()->wait();
  } catch (const std::exception& e) {
    fail_collective("barrier", env_, e);
  }
}

}  // namespace atelier
