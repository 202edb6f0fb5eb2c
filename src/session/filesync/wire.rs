//! The packets of a transfer as gRPC messages, written straight into the
//! buffers that go out: a 5-byte gRPC prefix, then the protobuf encoding of
//! `fsutil.types.Packet`. A DATA packet's header is written in front of the
//! room its content is read into, so file content is never copied in user
//! space on its way to the connection.

use bytes::{BufMut, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;

use crate::proto::fsutil::types::{packet::PacketType, Packet, Stat};

/// gRPC's message prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;

const TYPE_FIELD: u32 = 1;
const ID_FIELD: u32 = 3;
const DATA_FIELD: u32 = 4;

fn put_prefix(buf: &mut BytesMut, message_len: usize) {
    buf.put_u8(0);
    // Messages are far below 4 GiB: content comes in chunks of at most
    // CHUNK_SIZE and names are bounded by PATH_MAX.
    buf.put_u32(message_len as u32);
}

/// Appends a whole packet.
pub fn put_packet(buf: &mut BytesMut, p: &Packet) {
    let len = p.encoded_len();
    buf.reserve(PREFIX + len);
    put_prefix(buf, len);
    p.encode_raw(buf);
}

/// Appends a STAT packet announcing `stat`; `None` ends the walk.
pub fn put_stat(buf: &mut BytesMut, stat: Option<Stat>) {
    put_packet(
        buf,
        &Packet {
            r#type: PacketType::PacketStat as i32,
            stat,
            ..Default::default()
        },
    );
}

/// Appends a packet of `kind` with `data` (FIN, ERR).
pub fn put_simple(buf: &mut BytesMut, kind: PacketType, data: &[u8]) {
    put_packet(
        buf,
        &Packet {
            r#type: kind as i32,
            data: bytes::Bytes::copy_from_slice(data),
            ..Default::default()
        },
    );
}

/// The protobuf length of a DATA packet for file `id` carrying `n` bytes;
/// zero fields are left out, as proto3 encoders do.
fn data_message_len(id: u32, n: usize) -> usize {
    let mut len = key_len(TYPE_FIELD) + encoded_len_varint(PacketType::PacketData as u64);
    if id != 0 {
        len += key_len(ID_FIELD) + encoded_len_varint(u64::from(id));
    }
    if n != 0 {
        len += key_len(DATA_FIELD) + encoded_len_varint(n as u64) + n;
    }
    len
}

/// How many bytes [`put_data_header`] writes.
pub fn data_header_len(id: u32, n: usize) -> usize {
    PREFIX + data_message_len(id, n) - n
}

/// Appends everything of a DATA packet for file `id` but its `n` bytes of
/// content, which the caller appends next. With `n` 0 this is the whole
/// packet that ends the file.
pub fn put_data_header(buf: &mut BytesMut, id: u32, n: usize) {
    put_prefix(buf, data_message_len(id, n));
    encode_key(TYPE_FIELD, WireType::Varint, buf);
    encode_varint(PacketType::PacketData as u64, buf);
    if id != 0 {
        encode_key(ID_FIELD, WireType::Varint, buf);
        encode_varint(u64::from(id), buf);
    }
    if n != 0 {
        encode_key(DATA_FIELD, WireType::LengthDelimited, buf);
        encode_varint(n as u64, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    /// Splits gRPC messages and decodes each packet.
    fn decode_all(mut buf: &[u8]) -> Vec<Packet> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            assert_eq!(buf.get_u8(), 0, "uncompressed");
            let len = buf.get_u32() as usize;
            out.push(Packet::decode(&buf[..len]).expect("packet"));
            buf.advance(len);
        }
        out
    }

    #[test]
    fn data_packets_decode_as_prost_encodes_them() {
        for (id, content) in [
            (0u32, &b""[..]),
            (0, b"x"),
            (1, b""),
            (127, b"abc"),
            (128, &[7u8; 300][..]),
            (u32::MAX, &[1u8; 70_000][..]),
        ] {
            let mut buf = BytesMut::new();
            put_data_header(&mut buf, id, content.len());
            assert_eq!(buf.len(), data_header_len(id, content.len()));
            buf.extend_from_slice(content);
            let expected = Packet {
                r#type: PacketType::PacketData as i32,
                id,
                data: bytes::Bytes::copy_from_slice(content),
                ..Default::default()
            };
            // Byte for byte what prost writes, and it decodes back.
            let mut by_prost = BytesMut::new();
            put_packet(&mut by_prost, &expected);
            assert_eq!(buf, by_prost, "id {id}, {} bytes", content.len());
            assert_eq!(decode_all(&buf), [expected]);
        }
    }

    #[test]
    fn packets_follow_each_other_in_one_buffer() {
        let mut buf = BytesMut::new();
        let stat = Stat {
            path: bytes::Bytes::from_static(b"a/b"),
            mode: 0o644,
            size: 3,
            ..Default::default()
        };
        put_stat(&mut buf, Some(stat.clone()));
        put_stat(&mut buf, None);
        put_data_header(&mut buf, 5, 3);
        buf.extend_from_slice(b"abc");
        put_data_header(&mut buf, 5, 0);
        put_simple(&mut buf, PacketType::PacketFin, b"");
        let got = decode_all(&buf);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].stat.as_ref(), Some(&stat));
        assert_eq!(got[1].stat, None);
        assert_eq!((got[2].id, &got[2].data[..]), (5, &b"abc"[..]));
        assert!(got[3].data.is_empty() && got[3].id == 5);
        assert_eq!(got[4].r#type, PacketType::PacketFin as i32);
    }
}
