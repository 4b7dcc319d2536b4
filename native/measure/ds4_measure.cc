// ds4_measure OUT ERR COMMAND [ARGS...]: runs COMMAND (found on PATH) with its stdout and stderr in the
// files OUT and ERR, and prints one JSON line with its exit status, wall time, CPU time and peak RSS.
// bench/ measures every process through this small launcher rather than from Node: Linux counts the
// address space a process exec()s from in its peak RSS, so a child spawned straight from the (large)
// benchmark process would report the benchmark's RSS; forked from this one it reports its own.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

static double now_s() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: ds4_measure OUT ERR COMMAND [ARGS...]\n");
    return 2;
  }
  const double t0 = now_s();
  const pid_t pid = fork();
  if (pid < 0) {
    std::fprintf(stderr, "ds4_measure: fork failed: %s\n", std::strerror(errno));
    return 2;
  }
  if (pid == 0) {
    const int out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644), err = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0 || err < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) _exit(126);
    execvp(argv[3], argv + 3);
    std::fprintf(stderr, "ds4_measure: cannot run %s: %s\n", argv[3], std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  rusage ru;
  while (wait4(pid, &status, 0, &ru) < 0)
    if (errno != EINTR) return 2;
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  // ru_maxrss is in kilobytes on Linux
  std::printf("{\"status\":%d,\"wallS\":%.6f,\"userS\":%.6f,\"sysS\":%.6f,\"maxRssBytes\":%lld}\n", code, now_s() - t0,
              ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
              (long long)ru.ru_maxrss * 1024);
  return 0;
}
