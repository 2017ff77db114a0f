// Times the exact 0/1 knapsack solver of one knapsack.h alone (no Python) on an instance file
// written by instances.py. Per class and R (one block of the file), prints one line:
//
//   NAME  mean MS max MS  bad B  sum S
//
// MS: mean and largest ms per instance of CPU time of this thread (CLOCK_THREAD_CPUTIME_ID),
// each instance's time the least of REPS runs; B: runs whose status was not optimal (over all
// REPS runs); S: checksum, the sum over instances of the value of the solution found.
//
// Build against one header (compare.sh builds it twice, against the old and the current one):
//   g++ -O3 -fno-trapping-math -DKNAPSACK_HEADER='"/path/to/knapsack.h"' harness.cpp -o harness
// Run:
//   ./harness INSTANCES [FILTER] [REPS]
// FILTER: only the classes whose name contains it ("_" matches all); REPS: default 1.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

#include KNAPSACK_HEADER

using namespace ldf_ip::knapsack;

static timespec thread_cpu_time() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t;
}

static double elapsed_ms(const timespec& a, const timespec& b) {
  return (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) * 1e-6;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s INSTANCES [FILTER] [REPS]\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1]);
  const char* only = argc > 2 ? argv[2] : nullptr;
  int reps = argc > 3 ? atoi(argv[3]) : 1;
  std::string name;
  long n, count;
  Solver solver;
  // One block per class and R: "name n count", then per instance c, n weights, n values.
  while (in >> name >> n >> count) {
    std::vector<std::vector<i64>> weights(count, std::vector<i64>(n));
    std::vector<std::vector<i64>> values(count, std::vector<i64>(n));
    std::vector<i64> capacity(count);
    for (long i = 0; i < count; ++i) {
      in >> capacity[i];
      for (auto& w : weights[i]) in >> w;
      for (auto& v : values[i]) in >> v;
    }
    if (only && name.find(only) == std::string::npos) continue;

    double total = 0, largest = 0;
    long long checksum = 0;
    int bad = 0;
    std::vector<uint8_t> x(n);
    for (long i = 0; i < count; ++i) {
      double best = 1e18;
      for (int r = 0; r < reps; ++r) {
        Deadline deadline(0);
        timespec start = thread_cpu_time();
        Status status =
            solver.solve(weights[i].data(), values[i].data(), n, capacity[i], x.data(), deadline);
        double ms = elapsed_ms(start, thread_cpu_time());
        best = std::min(best, ms);
        if (status != kOptimal) bad++;
        for (long j = 0; j < n; ++j) checksum += x[j] * values[i][j];
      }
      total += best;
      largest = std::max(largest, best);
    }
    printf("%-36s mean %7.3f max %7.3f  bad %d  sum %lld\n", name.c_str(), total / count, largest,
           bad, checksum / reps);
  }
}
