// Data-parallel training over torch.distributed's c10d, as LibTorch ships it: a TCPStore rendezvous served
// by rank 0 at MASTER_ADDR:MASTER_PORT, a Gloo process group for CPU tensors and, on CUDA builds, an NCCL
// one for CUDA tensors (torch.distributed's "cpu:gloo,cuda:nccl"). Nothing of the transport is Atelier's own.
//
// The launchers people use set the environment: torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
// MASTER_PORT), SLURM's srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; MASTER_ADDR/MASTER_PORT from the
// batch script), or `atelier run --nproc N`, which starts N local processes itself.
//
// How a training job uses it (core/train_loop.h does the collective parts): every rank draws the same
// global batch positions and random numbers from the same seeds and keeps its rows (Shard, core/job.h),
// so each rank's loss is the mean over batch / world rows; the loop averages the gradients over the ranks
// (the gradient of the global batch's mean loss, as one process computes it) before clipping, and every
// rank takes the same optimizer step. Rank 0 alone writes checkpoints, logs and outputs.
//
//   ProcessGroup group(parallel_environment(), std::chrono::seconds(600));
//   group.broadcast(params);            // rank 0's values everywhere
//   group.average(grads);               // in place, bucketed all-reduce / world
#pragma once
#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/job.h"

namespace atelier {

// Where this process stands in a data-parallel run, as the environment says.
struct ParallelEnvironment {
  int rank = 0, world = 1, local_rank = 0;
  int local_world = 1;  // processes on this machine (LOCAL_WORLD_SIZE, as torchrun and --nproc set it)
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single process";  // "torchrun", "SLURM" or "single process"
  std::chrono::seconds timeout{600};      // ATELIER_DIST_TIMEOUT: rendezvous and each collective
  // torchrun's agent already serves the store at MASTER_ADDR:MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE):
  // every rank is a client, under the prefix of the agent's restart count, as torch.distributed does.
  bool agent_store = false;
  int restart_count = 0;  // TORCHELASTIC_RESTART_COUNT
  // What carries CUDA tensors (ATELIER_DIST_BACKEND): "nccl" (the default where this build has NCCL) or
  // "gloo" (staged through the host; the only choice without NCCL, and for several ranks on one GPU,
  // which NCCL refuses).
  std::string cuda_backend = "nccl";

  // A process group is made for several processes, and for torchrun's single one too (as
  // torch.distributed makes one): a one-process launch goes through the same collectives end to end.
  bool distributed() const { return world > 1 || source == "torchrun"; }
};

// Reads RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE (and torchrun's TORCHELASTIC_USE_AGENT_STORE and
// TORCHELASTIC_RESTART_COUNT), else SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID (a SLURM step of more than one
// task), with MASTER_ADDR, MASTER_PORT, ATELIER_DIST_TIMEOUT (seconds) and ATELIER_DIST_BACKEND. Error
// naming the variable when a value is malformed or out of range. `getenv` defaults to the process environment.
ParallelEnvironment parallel_environment(const std::function<const char*(const char*)>& getenv = {});

// Whether this build can all-reduce CUDA tensors through NCCL (a CUDA build that found nccl.h).
bool nccl_available();

// A loopback TCP port free now (bound to port 0, then released) for a local rendezvous. Error when none.
int free_loopback_port();

// The rows of a global batch's tensor (dim 0) that belong to `shard`.
torch::Tensor shard_rows(const torch::Tensor& global, const Shard& shard);

class ProcessGroup {
 public:
  // Rendezvous of every rank (blocks until all have joined, up to the timeout). Error naming the master
  // address when it cannot be reached.
  explicit ProcessGroup(const ParallelEnvironment& env);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return env_.rank; }
  int world() const { return env_.world; }
  // What all-reduces tensors on `device`: "gloo" or "nccl".
  std::string backend(const c10::Device& device) const;
  Shard shard() const { return {env_.rank, env_.world}; }

  // Rank 0's values into every rank's tensors, in place.
  void broadcast(const std::vector<torch::Tensor>& tensors);
  // Each tensor becomes the mean of its values over the ranks, in place: flattened into buckets of at most
  // `bucket_bytes` per dtype and device, one all-reduce per bucket.
  void average(const std::vector<torch::Tensor>& tensors, std::int64_t bucket_bytes = 25 << 20);
  // Every rank's `tensor` (same shape on each) concatenated along dim 0 in rank order: with a Shard's rows
  // per rank, the global batch. No gradient flows through it.
  torch::Tensor all_gather(const torch::Tensor& tensor);
  void barrier();
  // Bytes this rank sent into all-reduces so far (the tensors' sizes).
  std::int64_t reduced_bytes() const { return reduced_bytes_; }

 private:
  friend class GradientAverager;
  struct Impl;
  ParallelEnvironment env_;
  std::unique_ptr<Impl> impl_;
  std::int64_t reduced_bytes_ = 0;
};

// Gradient averaging overlapped with the backward pass: the parameters are split into buckets of at most
// `bucket_bytes` in reverse order (the order backward produces their gradients); a hook on each parameter
// copies its gradient into its bucket's buffer, and a full bucket's all-reduce starts at once (Gloo runs
// it on its own threads) while backward goes on. finish() starts what is left (a parameter without a
// gradient counts as zeros), waits, and writes the means into the parameters' .grad. The hooks act only
// between begin() and finish(), so a job's other backward passes are left alone.
// For a loss that couples the rows of a batch (a contrastive loss): the global batch's [batch, ...] rows
// made of every rank's `local` rows (in rank order), where this rank's own rows carry their gradient,
// scaled by the number of ranks. Each rank then computes the global loss, and the gradient averaging sums
// each rank's share of it: the global loss's gradient, as one process computes it (a parameter that
// enters the loss other than through the rows, like a logit scale, gets its gradient whole on each rank).
// Returns `local` when `group` is null.
torch::Tensor gather_batch(ProcessGroup* group, const torch::Tensor& local);

class GradientAverager {
 public:
  GradientAverager(ProcessGroup& group, const std::vector<torch::Tensor>& params, std::int64_t bucket_bytes = 25 << 20);
  ~GradientAverager();
  GradientAverager(const GradientAverager&) = delete;
  GradientAverager& operator=(const GradientAverager&) = delete;
  void begin();
  void finish();
  std::size_t buckets() const;

 private:
  struct State;
  std::shared_ptr<State> state_;  // shared with the hooks
};

}  // namespace atelier
