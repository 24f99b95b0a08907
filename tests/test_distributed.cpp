// Data-parallel training (core/distributed.h): the launcher environment, the Gloo collectives, and
// train_base on 2 processes over loopback ending with the weights of 1 process; a killed rank ends the
// other with one error, and the run resumes.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <map>
#include <thread>

#include "core/atomic_file.h"
#include "core/distributed.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "data/edit_pairs.h"
#include "data/presets.h"
#include "tests/helpers.h"

using namespace atelier;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

std::function<const char*(const char*)> env_of(const std::map<std::string, std::string>& vars) {
  return [vars](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

// Starts `atelier run` as rank `rank` of `world` (torchrun's variables); returns its pid.
pid_t start_rank(int rank, int world, int port, const std::vector<std::string>& args) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("RANK", std::to_string(rank).c_str(), 1);
    ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
    ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
    ::setenv("MASTER_ADDR", "127.0.0.1", 1);
    ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
    ::setenv("ATELIER_DIST_TIMEOUT", "60", 1);
    const int null = ::open("/dev/null", O_WRONLY);  // rank 0's one error is checked in status.json
    ::dup2(null, 1);
    ::dup2(null, 2);
    std::vector<char*> argv{const_cast<char*>(ATELIER_CLI)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(ATELIER_CLI, argv.data());
    ::_exit(127);
  }
  return pid;
}

void check_same_weights(const fs::path& a, const fs::path& b, double tolerance) {
  const auto x = safetensors::load(a).tensors, y = safetensors::load(b).tensors;
  REQUIRE(x.size() == y.size());
  for (const auto& [name, t] : x) {
    INFO(name);
    CHECK(test::relative_diff(y.at(name), t) < tolerance);
  }
}

}  // namespace

TEST_CASE("data-parallel environment: torchrun and SLURM variables, and errors naming the variable", "[distributed]") {
  const auto single = parallel_environment(env_of({}));
  CHECK(single.world == 1);
  CHECK_FALSE(single.distributed());
  const auto torchrun = parallel_environment(env_of({{"RANK", "1"},
                                                     {"WORLD_SIZE", "4"},
                                                     {"LOCAL_RANK", "1"},
                                                     {"MASTER_ADDR", "node7"},
                                                     {"MASTER_PORT", "29511"},
                                                     {"ATELIER_DIST_TIMEOUT", "30"}}));
  CHECK(torchrun.rank == 1);
  CHECK(torchrun.world == 4);
  CHECK(torchrun.master_addr == "node7");
  CHECK(torchrun.master_port == 29511);
  CHECK(torchrun.timeout.count() == 30);
  CHECK(torchrun.source == "torchrun");
  CHECK_FALSE(torchrun.agent_store);
  const auto agent = parallel_environment(env_of({{"RANK", "0"},
                                                  {"WORLD_SIZE", "2"},
                                                  {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                                  {"TORCHELASTIC_RESTART_COUNT", "2"}}));
  CHECK(agent.agent_store);
  CHECK(agent.restart_count == 2);
  const auto slurm = parallel_environment(
      env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}, {"MASTER_ADDR", "node1"}}));
  CHECK(slurm.world == 2);
  CHECK(slurm.source == "SLURM");
  CHECK_FALSE(parallel_environment(env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}})).distributed());
  CHECK(parallel_environment(env_of({{"WORLD_SIZE", "1"}, {"RANK", "0"}})).distributed());  // torchrun's one process
  // What carries CUDA tensors: NCCL where the build has it, else Gloo; ATELIER_DIST_BACKEND chooses.
  CHECK(single.cuda_backend == (nccl_available() ? "nccl" : "gloo"));
  CHECK(parallel_environment(env_of({{"ATELIER_DIST_BACKEND", "gloo"}})).cuda_backend == "gloo");
  CHECK_THROWS_WITH(parallel_environment(env_of({{"ATELIER_DIST_BACKEND", "mpi"}})),
                    Contains("ATELIER_DIST_BACKEND='mpi'") && Contains("nccl or gloo"));
  if (!nccl_available())
    CHECK_THROWS_WITH(parallel_environment(env_of({{"ATELIER_DIST_BACKEND", "nccl"}})), Contains("no NCCL"));
  CHECK_THROWS_WITH(parallel_environment(env_of({{"RANK", "4"}, {"WORLD_SIZE", "4"}})),
                    Contains("RANK='4'") && Contains("[0, 3]"));
  CHECK_THROWS_WITH(parallel_environment(env_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}})), Contains("MASTER_ADDR"));
  CHECK_THROWS_WITH(parallel_environment(env_of({{"WORLD_SIZE", "2"}, {"MASTER_PORT", "http"}})),
                    Contains("MASTER_PORT='http'"));
}

TEST_CASE("data-parallel collectives: broadcast from rank 0 and bucketed averages over Gloo on loopback",
          "[distributed]") {
  // Rank 0 serves the rendezvous store, or (torchrun's agent store) every rank is a client of one served
  // by the launcher, here the test.
  const bool agent = GENERATE(false, true);
  INFO("agent store: " << agent);
  const int port = free_loopback_port();
  c10::intrusive_ptr<c10d::TCPStore> launcher_store;
  if (agent) {
    c10d::TCPStoreOptions o;
    o.port = static_cast<std::uint16_t>(port);
    o.isServer = true;
    launcher_store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", o);
  }
  std::vector<torch::Tensor> results(3), broadcasts(3), gathered(3);
  std::vector<std::int64_t> bytes(3);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 3; ++r)
    ranks.emplace_back([&, r] {
      ParallelEnvironment env;
      env.rank = r, env.world = 3, env.master_port = port, env.timeout = std::chrono::seconds(60);
      env.agent_store = agent;
      ProcessGroup group(env);
      // Two float buckets (a 64-byte limit splits them) and a double tensor: each the mean over ranks.
      std::vector<torch::Tensor> t{torch::full({4}, r + 1.0f), torch::full({2, 3}, 10.0f * r),
                                   torch::full({5}, 2.0 * r, torch::kDouble)};
      group.average(t, 64);
      results[r] = torch::cat({t[0], t[1].flatten(), t[2].to(torch::kFloat)});
      bytes[r] = group.reduced_bytes();
      auto b = torch::full({3}, static_cast<float>(r));
      group.broadcast({b});
      broadcasts[r] = b;
      gathered[r] = group.all_gather(torch::full({2, 1}, static_cast<float>(r)));  // rank order along dim 0
      group.barrier();
    });
  for (auto& t : ranks) t.join();
  const auto expected = torch::cat({torch::full({4}, 2.0f), torch::full({6}, 10.0f), torch::full({5}, 2.0f)});
  for (int r = 0; r < 3; ++r) {
    CHECK(test::max_abs_diff(results[r], expected) < 1e-6);
    CHECK(test::max_abs_diff(broadcasts[r], torch::zeros({3})) == 0);
    CHECK(bytes[r] == 4 * 4 + 6 * 4 + 5 * 8);
    CHECK(test::max_abs_diff(gathered[r], torch::tensor({0.f, 0.f, 1.f, 1.f, 2.f, 2.f}).view({6, 1})) == 0);
  }
}

TEST_CASE("data-parallel gradients: averaged in buckets from hooks during backward; unused parameters count as zeros",
          "[distributed]") {
  const int port = free_loopback_port();
  std::vector<std::vector<torch::Tensor>> grads(2), outside(2);
  std::vector<std::size_t> buckets(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      ParallelEnvironment env;
      env.rank = r, env.world = 2, env.master_port = port, env.timeout = std::chrono::seconds(60);
      ProcessGroup group(env);
      // The same parameters on both ranks (no global generator: the ranks are threads), different inputs.
      auto w = torch::linspace(-1, 1, 12).view({3, 4}).requires_grad_(), b = torch::linspace(0, 1, 3).requires_grad_(),
           unused = torch::ones({2}).requires_grad_();
      GradientAverager averager(group, {w, b, unused}, 16);  // 16 bytes: one bucket per tensor
      buckets[r] = averager.buckets();
      const auto x = torch::full({5, 4}, r + 1.0f);
      averager.begin();
      torch::nn::functional::linear(x, w, b).pow(2).sum().backward();
      averager.finish();
      grads[r] = {w.grad().clone(), b.grad().clone(), unused.grad().clone()};
      // A backward pass outside begin()/finish() is this rank's own.
      w.mutable_grad().zero_();
      torch::nn::functional::linear(x, w, b).sum().backward();
      outside[r] = {w.grad().clone()};
    });
  for (auto& t : ranks) t.join();
  CHECK(buckets[0] == 3);
  // The expected mean: each rank's gradient computed alone, averaged.
  auto w = torch::linspace(-1, 1, 12).view({3, 4}).requires_grad_(), b = torch::linspace(0, 1, 3).requires_grad_();
  torch::Tensor gw = torch::zeros({3, 4}), gb = torch::zeros({3});
  for (int r = 0; r < 2; ++r) {
    w.mutable_grad() = torch::Tensor(), b.mutable_grad() = torch::Tensor();
    torch::nn::functional::linear(torch::full({5, 4}, r + 1.0f), w, b).pow(2).sum().backward();
    gw += w.grad() / 2, gb += b.grad() / 2;
  }
  for (int r = 0; r < 2; ++r) {
    CHECK(test::relative_diff(grads[r][0], gw) < 1e-6);
    CHECK(test::relative_diff(grads[r][1], gb) < 1e-6);
    CHECK(test::max_abs_diff(grads[r][2], torch::zeros({2})) == 0);
    CHECK(test::max_abs_diff(outside[r][0], torch::full({3, 4}, 5.0f * (r + 1))) == 0);
  }
}

TEST_CASE("data-parallel train_base: 2 Gloo processes train the weights of 1; a killed rank ends the other; resume",
          "[distributed][cli]") {
  test::TempDir dir;
  json job = test::tiny_base_job(3);
  job["steps"] = 6;
  job["batch"] = 8;
  job["checkpoint_every"] = 2;
  const std::string file = (dir / "job.json").string();
  write_file_atomic(file, job.dump());
  auto one = test::run_cli("run -q " + file + " --run-dir " + (dir / "one").string());
  INFO(one.output);
  REQUIRE(one.exit_code == 0);

  // `--nproc 2` starts two ranks itself; the run folder holds rank 0's files only.
  auto two = test::run_cli("run -q " + file + " --run-dir " + (dir / "two").string() + " --nproc 2");
  INFO(two.output);
  REQUIRE(two.exit_code == 0);
  // fp32: the mean of two half-batch gradients differs from the whole batch's in the last bits only.
  check_same_weights(dir / "one" / "model.safetensors", dir / "two" / "model.safetensors", 1e-4);
  CHECK_THAT(read_file(dir / "two" / "log.jsonl"), Contains("data-parallel: 2 processes, 4 of each batch of 8"));
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir / "two")) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  CHECK(files == std::vector<std::string>{".lock", "checkpoints", "config.json", "log.jsonl", "model.safetensors",
                                          "preview.png", "status.json"});
  // Continued on 1 process for 4 more steps, it re-shards exactly: the weights of 1 process trained 10 steps.
  auto more = test::run_cli("run -q " + file + " --run-dir " + (dir / "two").string() + " --resume --set steps=10");
  INFO(more.output);
  REQUIRE(more.exit_code == 0);
  auto ten = test::run_cli("run -q " + file + " --run-dir " + (dir / "ten").string() + " --set steps=10");
  REQUIRE(ten.exit_code == 0);
  check_same_weights(dir / "ten" / "model.safetensors", dir / "two" / "model.safetensors", 1e-4);
  auto odd = test::run_cli("run -q " + file + " --run-dir " + (dir / "odd").string() + " --nproc 3");
  CHECK(odd.exit_code == 1);
  CHECK_THAT(odd.output, Contains("field 'batch'") && Contains("multiple of the 3"));

  // Rank 1 killed after the first checkpoint: rank 0 stops with one error (well within the 60 s timeout).
  job["steps"] = 60;
  write_file_atomic(file, job.dump());
  const int port = free_loopback_port();
  const std::vector<std::string> args{"run", "-q", file, "--run-dir", (dir / "killed").string()};
  const pid_t rank0 = start_rank(0, 2, port, args), rank1 = start_rank(1, 2, port, args);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(dir / "killed" / "checkpoints") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ::kill(rank1, SIGKILL);
  int status = 0;
  ::waitpid(rank1, &status, 0);
  const auto killed_at = std::chrono::steady_clock::now();
  ::waitpid(rank0, &status, 0);
  CHECK(std::chrono::steady_clock::now() - killed_at < std::chrono::seconds(60));
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  const json state = load_json_file(dir / "killed" / "status.json");
  CHECK(state["status"] == "failed");
  CHECK_THAT(state["error"].get<std::string>(), Contains("another rank exited") && Contains("--resume"));

  // Resumed with 2 processes it completes, and matches 1 process trained the same steps.
  auto full = test::run_cli("run -q " + file + " --run-dir " + (dir / "full").string());
  REQUIRE(full.exit_code == 0);
  auto resumed = test::run_cli("run -q " + file + " --run-dir " + (dir / "killed").string() + " --resume --nproc 2");
  INFO(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  check_same_weights(dir / "full" / "model.safetensors", dir / "killed" / "model.safetensors", 1e-3);
}

TEST_CASE("data-parallel: the kinds that shard their batch train the same tensors on 2 processes as on 1",
          "[distributed][cli]") {
  test::TempDir dir;
  const fs::path base = test::tiny_base_model(dir);
  json difffit = test::tiny_finetune_job(base, "difffit");
  difffit["probe"] = "";
  const json concept_job = {
      {"kind", "lora"}, {"base", base.string()}, {"glyph", "bolt"},   {"steps", 3}, {"batch", 4}, {"rank", 2},
      {"alpha", 2},     {"sample_every", 100},   {"sample_steps", 2}, {"probe", ""}};
  const json distill = {{"kind", "distill_steps"}, {"teacher", base.string()}, {"steps", 3},  {"batch", 4},
                        {"sample_every", 1000},    {"eval_steps", {1}},        {"probe", ""}, {"teacher_steps", 1},
                        {"eval_per_class", 1}};
  const json probe = {{"kind", "train_probe"}, {"steps", 4},        {"batch", 8},           {"width", 4},
                      {"val_samples", 16},     {"eval_every", 100}, {"checkpoint_every", 2}};
  write_shapes_folder({{"classes", {"circle", "star"}}, {"styles", {"night"}}}, 16, 4, dir / "art");
  const json sd = {{"kind", "difffit"},
                   {"base", test::source_path("tests/fixtures/sd/tiny").string()},
                   {"images", (dir / "art").string()},
                   {"steps", 3},
                   {"batch", 4},
                   {"sample_every", 1000},
                   {"sample_steps", 1},
                   {"probe", ""},
                   {"tokenizer", test::source_path("assets/text/bpe_simple_vocab_16e6.txt.gz").string()}};
  // PSO tunes the student that the distill entry trains (before it in the list).
  const json pso = {{"kind", "pso"},        {"model", (dir / "distill1" / "model.safetensors").string()},
                    {"styles", {"night"}},  {"count", 4},
                    {"references", 2},      {"model_steps", 2},
                    {"lora_rank", 2},       {"lora_alpha", 2},
                    {"steps", 3},           {"batch", 4},
                    {"sample_every", 1000}, {"eval_steps", {1}},
                    {"eval_per_class", 1},  {"probe", ""}};
  json pso_naive = pso;
  pso_naive["objective"] = "naive";
  // E2GAN: two edits' pairs written directly, so a batch mixes edits across the ranks' rows.
  std::vector<std::string> pairs;
  for (const char* edit : {"night", "outline", "pixel"}) {
    EditPairs p;
    p.edit = edit;
    p.classes = {"circle"};
    Rng rng(pairs.size() + 3);
    p.train = {rng.rand({12, 3, 16, 16}) * 2 - 1, rng.rand({12, 3, 16, 16}) * 2 - 1, torch::Tensor(),
               torch::zeros({12}, torch::kLong)};
    pairs.push_back((dir / (std::string(edit) + ".safetensors")).string());
    save_edit_pairs(pairs.back(), p);
  }
  const json gan = {{"kind", "e2gan_base"},
                    {"pairs", {pairs[0], pairs[1]}},
                    {"channels", {4, 8, 16}},
                    {"heads", 2},
                    {"edit_tokens", 2},
                    {"disc_width", 4},
                    {"steps", 3},
                    {"batch", 4},
                    {"eval_every", 1000},
                    {"probe", ""}};
  const json gan_edit = {{"kind", "e2gan_concept"},
                         {"generator", (dir / "gan1" / "generator.safetensors").string()},
                         {"pairs", pairs[2]},
                         {"ranks", {1, 2}},
                         {"search_steps", 1},
                         {"disc_width", 4},
                         {"steps", 3},
                         {"batch", 4},
                         {"eval_every", 1000},
                         {"probe", ""}};
  // CLIP's contrastive loss couples the batch: each rank's rows are gathered into the global batch.
  const json clip = {{"kind", "train_clip"},
                     {"vision_width", 4},
                     {"embed_dim", 16},
                     {"transformer_width", 16},
                     {"transformer_heads", 2},
                     {"transformer_layers", 1},
                     {"steps", 3},
                     {"batch", 8},
                     {"warmup", 1},
                     {"eval_every", 1000},
                     {"zero_shot_samples", 8},
                     {"val_samples", 8}};
  const std::vector<std::tuple<std::string, json, std::string>> kinds{
      {"difffit", difffit, "adapter.safetensors"},     {"concept", concept_job, "adapter.safetensors"},
      {"distill", distill, "model.safetensors"},       {"pso", pso, "adapter.safetensors"},
      {"pso_naive", pso_naive, "adapter.safetensors"}, {"gan", gan, "generator.safetensors"},
      {"gan_edit", gan_edit, "edit.safetensors"},      {"clip", clip, "clip.safetensors"},
      {"probe", probe, "probe.safetensors"},           {"sd", sd, "adapter.safetensors"}};
  for (const auto& [name, job, output] : kinds) {
    INFO(name);
    const std::string file = (dir / (name + ".json")).string();
    write_file_atomic(file, job.dump());
    for (const char* n : {"1", "2"}) {
      auto r = test::run_cli("run -q " + file + " --run-dir " + (dir / (name + n)).string() + " --nproc " + n);
      INFO(r.output);
      REQUIRE(r.exit_code == 0);
    }
    check_same_weights(dir / (name + "1") / output, dir / (name + "2") / output, 1e-4);
  }
}
