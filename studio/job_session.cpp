#include "studio/job_session.h"

#include <deque>

#include "core/error.h"

namespace atelier {

const char* job_state_name(JobState s) {
  switch (s) {
    case JobState::Idle: return "idle";
    case JobState::Running: return "running";
    case JobState::Completed: return "completed";
    case JobState::Cancelled: return "cancelled";
    case JobState::Failed: return "failed";
  }
  return "idle";
}

void JobView::apply(const Event& e) {
  switch (e.type) {
    case Event::Type::Progress: {
      phase = e.phase;
      step = e.step;
      total = e.total;
      it_per_s = e.it_per_s;
      eta_s = e.eta_s;
      if (auto it = e.scalars.find("loss"); it != e.scalars.end())
        loss.emplace_back(e.step, static_cast<float>(it->second));
      if (auto it = e.scalars.find("val_loss"); it != e.scalars.end())
        val_loss.emplace_back(e.step, static_cast<float>(it->second));
      break;
    }
    case Event::Type::Artifact:
      artifacts[e.message] = e.path;
      ++artifact_version;
      break;
    case Event::Type::Metrics:
      for (const auto& [k, v] : e.scalars) metrics[k] = v;
      break;
    case Event::Type::Log: break;
  }
  events.push_back(e);
}

struct JobSession::Shared {
  std::mutex mutex;
  std::deque<Event> queue;
  JobState state = JobState::Idle;
  std::string error;
  CancelToken cancel;
};

JobSession::JobSession(const JobRegistry& registry, int threads)
    : runner_(registry), threads_(threads), shared_(std::make_shared<Shared>()) {}

JobSession::~JobSession() {
  cancel();
  wait();
}

bool JobSession::busy() const {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  return shared_->state == JobState::Running;
}

void JobSession::cancel() {
  shared_->cancel.request();
}

void JobSession::wait() {
  if (worker_.joinable()) worker_.join();
}

PreparedRun JobSession::start(const RunRequest& request) {
  if (busy()) fail("a job is already running; cancel it or wait for it to finish");
  PreparedRun prepared = runner_.prepare(request);  // throws on invalid input: nothing starts
  prepared.threads = threads_;
  PreparedRun info = prepared;
  wait();
  {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    shared_->queue.clear();
    shared_->state = JobState::Running;
    shared_->error.clear();
    shared_->cancel.reset();
  }
  worker_ = std::thread([this, prepared = std::move(prepared)] {
    auto shared = shared_;
    auto push = [shared](const Event& e) {
      std::lock_guard<std::mutex> lock(shared->mutex);
      shared->queue.push_back(e);
    };
    Reporter reporter;
    reporter.add_sink(std::make_shared<CallbackSink>(push));
    RunResult result;
    try {
      result = runner_.run(prepared, reporter, shared->cancel);
    } catch (const std::exception& e) {
      result.status = RunResult::Status::Failed;
      result.error = e.what();
      reporter.error(result.error);
    }
    std::lock_guard<std::mutex> lock(shared->mutex);
    shared->error = result.error;
    shared->state = result.status == RunResult::Status::Completed   ? JobState::Completed
                    : result.status == RunResult::Status::Cancelled ? JobState::Cancelled
                                                                    : JobState::Failed;
  });
  return info;
}

void JobSession::poll(JobView& view) {
  std::deque<Event> events;
  JobState state;
  std::string error;
  {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    events.swap(shared_->queue);
    state = shared_->state;
    error = shared_->error;
  }
  for (const auto& e : events) view.apply(e);
  view.state = state;
  view.error = error;
}

}  // namespace atelier
