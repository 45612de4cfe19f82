// Host driver for rover_protocol.cpp (no Arduino): tests/test_firmware.py compiles it with g++ and
// pipes records into it.
//
// stdin: records "<now_ms> <n>\n" followed by exactly n raw bytes to feed at time now_ms.
// stdout, per record: "R <reply>" for each reply produced, "W" when the watchdog stopped the motors,
// then "M <left> <right>" (3 decimals), then "T ..." when telemetry was due (battery 87), then ".".
// A record "<now_ms> -1\n" prints format_telemetry of a few edge values instead.
#include <stdio.h>
#include <stdlib.h>

#include "rover_protocol.h"  // -I firmware_stubs/rover

int main() {
  rover::Protocol p;
  unsigned long now = 0;
  long n = 0;
  while (scanf("%lu %ld", &now, &n) == 2) {
    if (getchar() != '\n') return 2;
    uint32_t t = static_cast<uint32_t>(now);
    if (n == -1) {
      const int batteries[] = {-5, 0, 7, 42, 100, 250};
      const float speeds[] = {0.0f, -0.004f, 0.505f, -1.0f, 12.5f, -0.75f};
      for (int i = 0; i < 6; ++i) {
        char buf[24];
        rover::format_telemetry(buf, sizeof buf, batteries[i], speeds[i]);
        printf("%s\n", buf);
      }
      continue;
    }
    for (long i = 0; i < n; ++i) {
      int c = getchar();
      if (c == EOF) return 3;
      const char* reply = p.feed(static_cast<char>(c), t);
      if (reply != nullptr) printf("R %s\n", reply);
    }
    if (p.tick(t)) printf("W\n");
    printf("M %.3f %.3f\n", p.left(), p.right());
    if (p.telemetry_due(t)) {
      char buf[24];
      rover::format_telemetry(buf, sizeof buf, 87, p.speed());
      printf("%s\n", buf);
    }
    printf(".\n");   // end of this record's output
    fflush(stdout);
  }
  return 0;
}
