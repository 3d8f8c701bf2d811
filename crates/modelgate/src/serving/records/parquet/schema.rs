//! The Parquet sink's Arrow schemas, one per record kind, and the encoding
//! of records into a Parquet file (columns built directly from the record
//! types; nested outputs and tensors as list and struct columns).

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray,
    StructArray, TimestampMillisecondArray,
};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::serving::records::{
    OutcomeRecord, OutputRecord, PredictionRecord, Record, SCHEMA_VERSION, TensorValues,
};

/// A Parquet file of `records`, all of one kind (one table's rows).
pub(super) fn encode(records: &[Record]) -> Result<bytes::Bytes, String> {
    let predictions: Vec<&PredictionRecord> =
        records.iter().filter_map(|r| if let Record::Prediction(p) = r { Some(p) } else { None }).collect();
    let batch = if predictions.is_empty() {
        let outcomes: Vec<&OutcomeRecord> =
            records.iter().filter_map(|r| if let Record::Outcome(o) = r { Some(o) } else { None }).collect();
        outcome_batch(&outcomes)
    } else {
        prediction_batch(&predictions)
    }
    .map_err(|e| e.to_string())?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "modelgate.record_schema".to_owned(),
            SCHEMA_VERSION.to_string(),
        )]))
        .build();
    let mut writer =
        ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).map_err(|e| e.to_string())?;
    writer.write(&batch).map_err(|e| e.to_string())?;
    Ok(writer.into_inner().map_err(|e| e.to_string())?.into())
}

fn field(name: &str, data_type: DataType, nullable: bool) -> Field {
    Field::new(name, data_type, nullable)
}

fn list_of(item: DataType, nullable_items: bool) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, nullable_items)))
}

fn utc_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// A tensor's values as a struct column ([`TensorValues`]).
fn tensor_fields() -> Fields {
    Fields::from(vec![
        field("dtype", DataType::Utf8, false),
        field("shape", list_of(DataType::Int64, false), false),
        field("values", list_of(DataType::Float64, true), false),
        field("strings", list_of(DataType::Utf8, false), false),
        field("truncated", DataType::Boolean, false),
        field("count", DataType::Int64, false),
        field("min", DataType::Float64, true),
        field("max", DataType::Float64, true),
        field("mean", DataType::Float64, true),
    ])
}

/// One output of both versions ([`OutputRecord`]).
fn output_fields() -> Fields {
    Fields::from(vec![
        field("name", DataType::Utf8, false),
        field("champion", DataType::Struct(tensor_fields()), false),
        field("shadow", DataType::Struct(tensor_fields()), true),
        field("elements", DataType::Int64, false),
        field("max_abs_diff", DataType::Float64, true),
        field("mean_abs_diff", DataType::Float64, true),
        field("agreement", DataType::Float64, true),
        field("champion_nan_inf", DataType::Int64, false),
        field("shadow_nan_inf", DataType::Int64, false),
        field("mismatch", DataType::Utf8, true),
    ])
}

/// The columns of `predictions/` files: one row per [`PredictionRecord`].
/// Versions, latencies and counts are signed 64-bit (external tables do not
/// all read unsigned Parquet integers).
pub fn prediction_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("schema", DataType::Int32, false),
        field("ts_ms", DataType::Int64, false),
        field("ts", utc_ms(), false),
        field("request_id", DataType::Utf8, false),
        field("replica", DataType::Utf8, false),
        field("champion_version", DataType::Int64, false),
        field("champion_role", DataType::Utf8, false),
        field("shadow_version", DataType::Int64, false),
        field("shadow_role", DataType::Utf8, false),
        field("routing_key_hash", DataType::Utf8, true),
        field("champion_latency_us", DataType::Int64, false),
        field("shadow_latency_us", DataType::Int64, false),
        field("shadow_error", DataType::Utf8, true),
        field("outputs", list_of(DataType::Struct(output_fields()), false), false),
        field("inputs", list_of(DataType::Struct(tensor_fields()), false), true),
    ]))
}

/// The columns of `outcomes/` files: one row per [`OutcomeRecord`].
pub fn outcome_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("schema", DataType::Int32, false),
        field("ts_ms", DataType::Int64, false),
        field("ts", utc_ms(), false),
        field("request_id", DataType::Utf8, false),
        field("replica", DataType::Utf8, false),
        field("routing_key_hash", DataType::Utf8, true),
        field("metric", DataType::Utf8, false),
        field("value", DataType::Float64, false),
        field("joined", DataType::Boolean, false),
        field("version", DataType::Int64, true),
        field("role", DataType::Utf8, true),
    ]))
}

type ArrowResult<T> = Result<T, arrow_schema::ArrowError>;

fn strings<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

fn ints(values: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(Int64Array::from_iter(values))
}

fn floats(values: impl IntoIterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(values))
}

/// A list column: `lengths[i]` items of `items` for row i, null where `valid` says.
fn list(
    item: &DataType,
    nullable_items: bool,
    lengths: Vec<usize>,
    items: ArrayRef,
    valid: Option<Vec<bool>>,
) -> ArrayRef {
    let field: FieldRef = Arc::new(Field::new("item", item.clone(), nullable_items));
    Arc::new(ListArray::new(field, OffsetBuffer::from_lengths(lengths), items, valid.map(NullBuffer::from)))
}

/// A struct column of tensors; a `None` row is null (its children hold defaults).
fn tensor_column(rows: &[Option<&TensorValues>]) -> ArrowResult<StructArray> {
    let empty = TensorValues {
        dtype: String::new(),
        shape: Vec::new(),
        values: Vec::new(),
        strings: Vec::new(),
        truncated: false,
        count: 0,
        min: None,
        max: None,
        mean: None,
    };
    let t: Vec<&TensorValues> = rows.iter().map(|r| r.unwrap_or(&empty)).collect();
    let shape = list(
        &DataType::Int64,
        false,
        t.iter().map(|t| t.shape.len()).collect(),
        ints(t.iter().flat_map(|t| t.shape.iter().map(|&d| Some(d)))),
        None,
    );
    let values = list(
        &DataType::Float64,
        true,
        t.iter().map(|t| t.values.len()).collect(),
        floats(t.iter().flat_map(|t| t.values.iter().copied())),
        None,
    );
    let texts = list(
        &DataType::Utf8,
        false,
        t.iter().map(|t| t.strings.len()).collect(),
        strings(t.iter().flat_map(|t| t.strings.iter().map(|s| Some(s.as_str())))),
        None,
    );
    let columns: Vec<ArrayRef> = vec![
        strings(t.iter().map(|t| Some(t.dtype.as_str()))),
        shape,
        values,
        texts,
        Arc::new(BooleanArray::from_iter(t.iter().map(|t| Some(t.truncated)))),
        ints(t.iter().map(|t| Some(t.count as i64))),
        floats(t.iter().map(|t| t.min)),
        floats(t.iter().map(|t| t.max)),
        floats(t.iter().map(|t| t.mean)),
    ];
    let valid =
        rows.iter().any(Option::is_none).then(|| NullBuffer::from_iter(rows.iter().map(Option::is_some)));
    StructArray::try_new(tensor_fields(), columns, valid)
}

fn output_column(outputs: &[&OutputRecord]) -> ArrowResult<StructArray> {
    let champion: Vec<Option<&TensorValues>> = outputs.iter().map(|o| Some(&o.champion)).collect();
    let shadow: Vec<Option<&TensorValues>> = outputs.iter().map(|o| o.shadow.as_ref()).collect();
    let columns: Vec<ArrayRef> = vec![
        strings(outputs.iter().map(|o| Some(o.name.as_str()))),
        Arc::new(tensor_column(&champion)?),
        Arc::new(tensor_column(&shadow)?),
        ints(outputs.iter().map(|o| Some(o.elements as i64))),
        floats(outputs.iter().map(|o| o.max_abs_diff)),
        floats(outputs.iter().map(|o| o.mean_abs_diff)),
        floats(outputs.iter().map(|o| o.agreement)),
        ints(outputs.iter().map(|o| Some(o.champion_nan_inf as i64))),
        ints(outputs.iter().map(|o| Some(o.shadow_nan_inf as i64))),
        strings(outputs.iter().map(|o| o.mismatch.as_deref())),
    ];
    StructArray::try_new(output_fields(), columns, None)
}

fn prediction_batch(rows: &[&PredictionRecord]) -> ArrowResult<RecordBatch> {
    let outputs: Vec<&OutputRecord> = rows.iter().flat_map(|p| p.outputs.iter()).collect();
    let inputs: Vec<Option<&TensorValues>> =
        rows.iter().flat_map(|p| p.inputs.iter().flatten().map(Some)).collect();
    let input_valid: Vec<bool> = rows.iter().map(|p| p.inputs.is_some()).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter(rows.iter().map(|p| Some(p.schema as i32)))),
        ints(rows.iter().map(|p| Some(p.ts_ms))),
        Arc::new(
            TimestampMillisecondArray::from_iter(rows.iter().map(|p| Some(p.ts_ms))).with_timezone("UTC"),
        ),
        strings(rows.iter().map(|p| Some(p.request_id.as_str()))),
        strings(rows.iter().map(|p| Some(p.replica.as_str()))),
        ints(rows.iter().map(|p| Some(p.champion_version as i64))),
        strings(rows.iter().map(|p| Some(p.champion_role.as_str()))),
        ints(rows.iter().map(|p| Some(p.shadow_version as i64))),
        strings(rows.iter().map(|p| Some(p.shadow_role.as_str()))),
        strings(rows.iter().map(|p| p.routing_key_hash.as_deref())),
        ints(rows.iter().map(|p| Some(p.champion_latency_us as i64))),
        ints(rows.iter().map(|p| Some(p.shadow_latency_us as i64))),
        strings(rows.iter().map(|p| p.shadow_error.as_deref())),
        list(
            &DataType::Struct(output_fields()),
            false,
            rows.iter().map(|p| p.outputs.len()).collect(),
            Arc::new(output_column(&outputs)?),
            None,
        ),
        list(
            &DataType::Struct(tensor_fields()),
            false,
            rows.iter().map(|p| p.inputs.as_ref().map_or(0, Vec::len)).collect(),
            Arc::new(tensor_column(&inputs)?),
            Some(input_valid),
        ),
    ];
    RecordBatch::try_new(prediction_schema(), columns)
}

fn outcome_batch(rows: &[&OutcomeRecord]) -> ArrowResult<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter(rows.iter().map(|o| Some(o.schema as i32)))),
        ints(rows.iter().map(|o| Some(o.ts_ms))),
        Arc::new(
            TimestampMillisecondArray::from_iter(rows.iter().map(|o| Some(o.ts_ms))).with_timezone("UTC"),
        ),
        strings(rows.iter().map(|o| Some(o.request_id.as_str()))),
        strings(rows.iter().map(|o| Some(o.replica.as_str()))),
        strings(rows.iter().map(|o| o.routing_key_hash.as_deref())),
        strings(rows.iter().map(|o| Some(o.metric.as_str()))),
        floats(rows.iter().map(|o| Some(o.value))),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|o| Some(o.joined)))),
        ints(rows.iter().map(|o| o.version.map(|v| v as i64))),
        strings(rows.iter().map(|o| o.role.as_deref())),
    ];
    RecordBatch::try_new(outcome_schema(), columns)
}
