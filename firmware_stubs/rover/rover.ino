// Two-motor rover for signal-bridge: glue between Serial, the motor driver and the protocol.
//
// All parsing, mixing and the 1 s watchdog live in rover_protocol.cpp (plain C++, tested on the host
// by tests/test_firmware.py). This file only moves bytes and sets pins. Protocol: ../README.md.
//
// Wiring (L298N-style dual H-bridge, 2S LiPo through a 1:2 divider on A0):
//   left motor:  PWM pin 5, direction pins 7/8      right motor: PWM pin 6, direction pins 9/10
#include "rover_protocol.h"

namespace {

const uint8_t kLeftPwm = 5, kLeftA = 7, kLeftB = 8;
const uint8_t kRightPwm = 6, kRightA = 9, kRightB = 10;
const uint8_t kBatteryPin = A0;
// 2S LiPo: 6.4 V empty .. 8.4 V full, halved by the divider, read against a 5 V reference.
const long kEmptyMv = 6400, kFullMv = 8400;

rover::Protocol proto;

void drive(uint8_t pwm, uint8_t a, uint8_t b, float v) {
  digitalWrite(a, v > 0 ? HIGH : LOW);
  digitalWrite(b, v < 0 ? HIGH : LOW);
  float m = v < 0 ? -v : v;
  analogWrite(pwm, static_cast<int>(m * 255.0f + 0.5f));
}

int battery_percent() {
  long mv = static_cast<long>(analogRead(kBatteryPin)) * 5000L * 2L / 1023L;
  long pct = (mv - kEmptyMv) * 100L / (kFullMv - kEmptyMv);
  return static_cast<int>(pct < 0 ? 0 : (pct > 100 ? 100 : pct));
}

void send_line(const char* s) {
  Serial.print(s);
  Serial.print('\n');   // not println: the protocol's terminator is a bare LF
}

}  // namespace

void setup() {
  const uint8_t outputs[] = {kLeftPwm, kLeftA, kLeftB, kRightPwm, kRightA, kRightB};
  for (uint8_t pin : outputs) pinMode(pin, OUTPUT);
  drive(kLeftPwm, kLeftA, kLeftB, 0);
  drive(kRightPwm, kRightA, kRightB, 0);
  Serial.begin(115200);
}

void loop() {
  uint32_t now = millis();
  while (Serial.available() > 0) {
    const char* reply = proto.feed(static_cast<char>(Serial.read()), now);
    if (reply != nullptr) send_line(reply);
  }
  proto.tick(now);   // stops the motors when no valid command came for 1 s
  drive(kLeftPwm, kLeftA, kLeftB, proto.left());
  drive(kRightPwm, kRightA, kRightB, proto.right());
  if (proto.telemetry_due(now)) {
    char buf[24];
    if (rover::format_telemetry(buf, sizeof buf, battery_percent(), proto.speed()) > 0) send_line(buf);
  }
}
