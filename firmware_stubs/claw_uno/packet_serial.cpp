// RoboClaw packet serial subset: see packet_serial.h.
#include "packet_serial.h"

namespace claw {

namespace {

// Data bytes between the command and the CRC; -1: not a write command we take.
int data_size(uint8_t cmd) {
  switch (cmd) {
    case 0: case 1: case 4: case 5: case 14: return 1;
    case 32: case 33: return 2;
    case 34: return 4;
    default: return -1;
  }
}

int16_t be16(const uint8_t* p) { return static_cast<int16_t>((p[0] << 8) | p[1]); }

}  // namespace

uint16_t crc16(const uint8_t* data, size_t n, uint16_t crc) {
  for (size_t i = 0; i < n; ++i) {              // the manual's routine, bit by bit
    crc ^= static_cast<uint16_t>(data[i]) << 8;
    for (uint8_t bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc;
}

PacketSerial::PacketSerial()
    : len_(0), last_byte_ms_(0), last_valid_ms_(0), timeout_ms_(kDefaultTimeoutMs), battery_(0) {
  duty_[0] = duty_[1] = 0;
}

size_t PacketSerial::feed(uint8_t byte, uint32_t now_ms, uint8_t* out) {
  if (len_ > 0 && static_cast<uint32_t>(now_ms - last_byte_ms_) > kPacketGapMs) len_ = 0;
  last_byte_ms_ = now_ms;
  if (len_ == 0 && byte != kAddress) return 0;  // not for us: wait for an address byte
  buf_[len_++] = byte;
  if (len_ < 2) return 0;
  uint8_t cmd = buf_[1];
  if (cmd == 24) {
    len_ = 0;
    last_valid_ms_ = now_ms;
    out[0] = static_cast<uint8_t>(battery_ >> 8);
    out[1] = static_cast<uint8_t>(battery_ & 0xFF);
    const uint8_t request[2] = {kAddress, 24};
    uint16_t crc = crc16(out, 2, crc16(request, 2));
    out[2] = static_cast<uint8_t>(crc >> 8);
    out[3] = static_cast<uint8_t>(crc & 0xFF);
    return 4;
  }
  int size = data_size(cmd);
  if (size < 0) {
    len_ = 0;
    return 0;
  }
  if (len_ < static_cast<size_t>(2 + size + 2)) return 0;
  return execute(now_ms, out);
}

size_t PacketSerial::execute(uint32_t now_ms, uint8_t* out) {
  size_t n = len_;
  len_ = 0;
  uint16_t got = static_cast<uint16_t>((buf_[n - 2] << 8) | buf_[n - 1]);
  if (crc16(buf_, n - 2) != got) return 0;       // corrupted: no reply, nothing changes
  const uint8_t* d = buf_ + 2;
  switch (buf_[1]) {
    case 0: case 1: case 4: case 5: {
      int16_t v = static_cast<int16_t>((d[0] > 127 ? 127 : d[0]) * 32767L / 127);
      set_duty(buf_[1] < 4 ? 0 : 1, (buf_[1] & 1) ? static_cast<int16_t>(-v) : v);
      break;
    }
    case 14: timeout_ms_ = static_cast<uint16_t>(d[0] * 100u); break;
    case 32: set_duty(0, be16(d)); break;
    case 33: set_duty(1, be16(d)); break;
    case 34: set_duty(0, be16(d)); set_duty(1, be16(d + 2)); break;
    default: return 0;
  }
  last_valid_ms_ = now_ms;
  out[0] = 0xFF;
  return 1;
}

bool PacketSerial::tick(uint32_t now_ms) {
  if (timeout_ms_ == 0 || static_cast<uint32_t>(now_ms - last_valid_ms_) < timeout_ms_) return false;
  if (duty_[0] == 0 && duty_[1] == 0) return false;
  duty_[0] = duty_[1] = 0;
  return true;
}

}  // namespace claw
