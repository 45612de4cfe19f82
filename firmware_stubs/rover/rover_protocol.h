// Rover line protocol: parser, motor mixing and watchdog, in plain C++ (no Arduino calls).
//
// The sketch (rover.ino) feeds every received byte and the current millis() in, and reads motor
// outputs and reply lines out; the host test (host/test_host.cpp) does the same with a fake clock.
// The protocol itself is documented in ../README.md. Summary:
//
//   M <x> <y>   move: x forward(+)/back(-), y turn right(+)/left(-), decimals in [-1, 1]  -> OK
//   S           stop now                                                                -> OK
//   K           keepalive (refreshes the watchdog, changes nothing else)                -> OK
//   anything else, or a bad argument                                                    -> ERR <reason>
//   every 100 ms the rover sends   T <battery 0-100> <speed -1.00..1.00>
//   no valid command for 1000 ms   -> motors stop by themselves
//
// No heap, no floats printed with printf (AVR's printf has none), no exceptions: fits an Uno.
#ifndef ROVER_PROTOCOL_H
#define ROVER_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

namespace rover {

const size_t kMaxLine = 47;             // longest accepted command, terminator excluded
const uint32_t kWatchdogMs = 1000;      // motors stop when no valid command arrived for this long
const uint32_t kTelemetryPeriodMs = 100;  // 10 Hz

// Strict decimal: [+-]? digits [. digits] or [+-]? . digits. No exponent, no nan/inf, at most
// 6 digits before the point and 6 after. Returns false for anything else.
bool parse_decimal(const char* s, float* out);

// Writes "T <battery> <speed>" (no terminator) into out; battery clamped to 0..100, speed to
// -9.99..9.99 with two decimals. Returns the length, or 0 when n is too small (n >= 16 is enough).
size_t format_telemetry(char* out, size_t n, int battery, float speed);

class Protocol {
 public:
  Protocol();

  // Feed one received byte at time now_ms. When it completes a non-empty line, the line is executed
  // and its reply ("OK" or "ERR <reason>", no terminator) is returned; otherwise nullptr. The
  // returned string stays valid until the next call.
  const char* feed(char c, uint32_t now_ms);

  // Call on every loop pass: applies the watchdog. Returns true when it has just stopped the motors.
  bool tick(uint32_t now_ms);

  // True once per kTelemetryPeriodMs (call it on every loop pass; it keeps its own schedule).
  bool telemetry_due(uint32_t now_ms);

  float left() const { return left_; }    // motor outputs in [-1, 1]
  float right() const { return right_; }
  float speed() const { return (left_ + right_) / 2; }   // no encoders: commanded mean speed

 private:
  const char* execute(uint32_t now_ms);
  void stop() { left_ = right_ = 0; }

  char line_[kMaxLine + 1];
  size_t len_;
  bool overlong_;
  bool bad_char_;
  float left_;
  float right_;
  uint32_t last_command_ms_;
  uint32_t next_telemetry_ms_;
  bool telemetry_started_;
};

}  // namespace rover

#endif  // ROVER_PROTOCOL_H
