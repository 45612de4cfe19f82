// A subset of BasicMicro's RoboClaw "packet serial" protocol, in plain C++ (no Arduino calls, no heap),
// so that an Arduino Uno with an H-bridge answers the same frames as the controller (and as
// ../roboclaw_sim.py): [address, command, data (MSB first), CRC16], CRC-16/XMODEM over every byte
// before it, 0xFF acknowledging a valid write, nothing for an invalid packet, a packet dropped after a
// 10 ms gap between its bytes.
//
//   0/1, 4/5   M1 / M2 forward / backward, u8 0-127          -> 0xFF
//   14         serial timeout, u8 tenths of a second (0: off) -> 0xFF
//   24         read main battery, tenths of a volt            -> u16 value, CRC16(address, 24, value)
//   32/33      M1 / M2 signed duty, s16                       -> 0xFF
//   34         M1 and M2 signed duty, s16 s16                 -> 0xFF
//
// Unlike the real controller, whose serial timeout is off until set, this one starts with 1 s: the
// motors stop by themselves when no valid packet came for that long.
#ifndef PACKET_SERIAL_H
#define PACKET_SERIAL_H

#include <stddef.h>
#include <stdint.h>

namespace claw {

const uint8_t kAddress = 0x80;
const uint32_t kPacketGapMs = 10;
const uint16_t kDefaultTimeoutMs = 1000;

uint16_t crc16(const uint8_t* data, size_t n, uint16_t crc = 0);

class PacketSerial {
 public:
  PacketSerial();

  // Feed one received byte at now_ms. Writes the reply (at most 4 bytes) into out and returns its
  // length (0: no reply, the packet is incomplete or was refused).
  size_t feed(uint8_t byte, uint32_t now_ms, uint8_t* out);

  // Call on every loop pass: the serial timeout. True when it has just stopped the motors.
  bool tick(uint32_t now_ms);

  int16_t duty(uint8_t motor) const { return duty_[motor]; }   // -32767..32767
  void set_battery_tenths(uint16_t tenths) { battery_ = tenths; }

 private:
  size_t execute(uint32_t now_ms, uint8_t* out);
  void set_duty(uint8_t motor, int16_t duty) { duty_[motor] = duty < -32767 ? -32767 : duty; }

  uint8_t buf_[8];
  size_t len_;
  uint32_t last_byte_ms_;
  uint32_t last_valid_ms_;
  uint16_t timeout_ms_;
  int16_t duty_[2];
  uint16_t battery_;
};

}  // namespace claw

#endif  // PACKET_SERIAL_H
