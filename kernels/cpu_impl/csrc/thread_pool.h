// A pool of worker threads that persist between calls, for the nearest-code kernels.
//
// Why not a fresh std::thread per call: a thread created right after its parent has slept is often
// placed on the parent's core, and until the scheduler rebalances (milliseconds) the call runs on one
// core; measured on 2 cores: 14 ms -> 25 ms for a search started 50 ms after the previous one. Workers
// that sleep on a condition variable wake on the core they last ran on, as OpenMP's do.
//
// run(threads, work) calls work(0) on the caller and work(1..threads-1) on workers, returns when all
// have finished, and rethrows an exception any of them raised. Calls are serialised. After fork() the child has none of the parent's workers; the
// pool notices (the process id changed) and the child starts a pool of its own.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include <unistd.h>

class ThreadPool {
   public:
    // The process's pool, never destroyed (workers may outlive static teardown). In a forked child the
    // parent's workers are gone while its mutex and condition variables still count them as waiting,
    // so the child gets a new pool (the old one is left behind, unused).
    static ThreadPool& instance() {
        static std::atomic<ThreadPool*> pool{new ThreadPool()};
        ThreadPool* current = pool.load();
        if (current->owner_ != getpid()) {
            current = new ThreadPool();
            pool.store(current);
        }
        return *current;
    }

    void run(int threads, const std::function<void(int)>& work) {
        std::lock_guard<std::mutex> one_call_at_a_time(call_mutex_);
        const int helpers = threads - 1;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            for (; workers_ < helpers; ++workers_)
                std::thread(&ThreadPool::serve, this, workers_ + 1, generation_).detach();
            job_ = &work;
            wanted_ = helpers;
            running_ = helpers;
            ++generation_;
        }
        wake_.notify_all();
        std::exception_ptr failure;
        try {
            work(0);
        } catch (...) {
            failure = std::current_exception();
        }
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [&] { return running_ == 0; });
        job_ = nullptr;
        if (!failure) std::swap(failure, worker_failure_);
        worker_failure_ = nullptr;
        if (failure) std::rethrow_exception(failure);
    }

   private:
    ThreadPool() : owner_(getpid()) {}

    void serve(int id, uint64_t seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            wake_.wait(lock, [&] { return generation_ != seen; });
            seen = generation_;
            if (id > wanted_) continue;  // not needed for this call
            const std::function<void(int)>* job = job_;
            lock.unlock();
            std::exception_ptr failure;
            try {
                (*job)(id);
            } catch (...) {
                failure = std::current_exception();
            }
            lock.lock();
            if (failure) worker_failure_ = failure;
            if (--running_ == 0) done_.notify_one();
        }
    }

    std::mutex call_mutex_, mutex_;
    std::condition_variable wake_, done_;
    const std::function<void(int)>* job_ = nullptr;
    std::exception_ptr worker_failure_;
    const pid_t owner_;
    int workers_ = 0, wanted_ = 0, running_ = 0;
    uint64_t generation_ = 0;
};
