// An Arduino Uno answering RoboClaw packet serial (a subset: packet_serial.h) with the rover's
// L298N wiring, so that a bridge config written for a RoboClaw (config/roboclaw.example.yaml) drives
// it unchanged. M1 = the left motor, M2 = the right one; the main battery is the 1:2 divider on A0.
//
//   left motor:  PWM pin 5, direction pins 7/8      right motor: PWM pin 6, direction pins 9/10
#include "packet_serial.h"

namespace {

const uint8_t kPwm[2] = {5, 6}, kFwd[2] = {7, 9}, kBack[2] = {8, 10};
const uint8_t kBatteryPin = A0;
const uint32_t kBatteryPeriodMs = 100;

claw::PacketSerial proto;
uint32_t next_battery_ms = 0;

void drive(uint8_t m, int16_t duty) {
  digitalWrite(kFwd[m], duty > 0 ? HIGH : LOW);
  digitalWrite(kBack[m], duty < 0 ? HIGH : LOW);
  long magnitude = duty < 0 ? -static_cast<long>(duty) : duty;
  analogWrite(kPwm[m], static_cast<int>((magnitude * 255L + 16383L) / 32767L));
}

}  // namespace

void setup() {
  for (uint8_t m = 0; m < 2; ++m) {
    pinMode(kPwm[m], OUTPUT);
    pinMode(kFwd[m], OUTPUT);
    pinMode(kBack[m], OUTPUT);
    drive(m, 0);
  }
  Serial.begin(38400);
}

void loop() {
  uint32_t now = millis();
  if (static_cast<int32_t>(now - next_battery_ms) >= 0) {
    // tenths of a volt at the battery: A0 * 5 V / 1023, doubled by the divider
    proto.set_battery_tenths(static_cast<uint16_t>(analogRead(kBatteryPin) * 100L / 1023L));
    next_battery_ms = now + kBatteryPeriodMs;
  }
  uint8_t reply[4];
  while (Serial.available() > 0) {
    size_t n = proto.feed(static_cast<uint8_t>(Serial.read()), now, reply);
    if (n > 0) Serial.write(reply, n);
  }
  proto.tick(now);
  drive(0, proto.duty(0));
  drive(1, proto.duty(1));
}
