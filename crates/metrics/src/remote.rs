//! Prometheus remote write (protocol 1.0): a `WriteRequest` encoded as protobuf by hand (four
//! small messages), then compressed with snappy's block format, as Prometheus-compatible receivers
//! (Prometheus itself, Mimir, Thanos, VictoriaMetrics) take it.
//!
//! ```text
//! WriteRequest { repeated TimeSeries timeseries = 1; }
//! TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
//! Label        { string name = 1; string value = 2; }
//! Sample       { double value = 1; int64 timestamp = 2; }
//! ```

use crate::labels::Labels;

/// The request body: protobuf, snappy-compressed. Series keep their samples' order.
pub fn write_request(series: &[(Labels, Vec<(i64, f64)>)]) -> Vec<u8> {
    let mut request = Vec::new();
    for (labels, samples) in series {
        let mut message = Vec::new();
        for (name, value) in labels.iter() {
            let mut label = Vec::new();
            bytes_field(1, name.as_bytes(), &mut label);
            bytes_field(2, value.as_bytes(), &mut label);
            bytes_field(1, &label, &mut message);
        }
        for (t, v) in samples {
            let mut sample = Vec::new();
            key(1, 1, &mut sample);
            sample.extend_from_slice(&v.to_le_bytes());
            key(2, 0, &mut sample);
            varint(*t as u64, &mut sample);
            bytes_field(2, &sample, &mut message);
        }
        bytes_field(1, &message, &mut request);
    }
    snap::raw::Encoder::new().compress_vec(&request).unwrap_or_default()
}

fn key(field: u32, wire_type: u8, out: &mut Vec<u8>) {
    varint(((field as u64) << 3) | wire_type as u64, out);
}

fn bytes_field(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    key(field, 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_decompresses_to_the_protobuf_bytes_expected() {
        let labels = Labels::new(vec![("__name__".into(), "up".into()), ("job".into(), "a".into())]);
        let body = write_request(&[(labels, vec![(1000, 1.0)])]);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        // timeseries(1) → labels(1) {name(1) "__name__", value(2) "up"}, {name "job", value "a"},
        // samples(2) {value(1) 1.0, timestamp(2) 1000}.
        let mut expected = vec![0x0a, 40];
        expected.extend([0x0a, 14, 0x0a, 8]);
        expected.extend(b"__name__");
        expected.extend([0x12, 2]);
        expected.extend(b"up");
        expected.extend([0x0a, 8, 0x0a, 3]);
        expected.extend(b"job");
        expected.extend([0x12, 1]);
        expected.extend(b"a");
        expected.extend([0x12, 12, 0x09]);
        expected.extend(1.0f64.to_le_bytes());
        expected.extend([0x10, 0xe8, 0x07]);
        assert_eq!(raw, expected);
    }
}
