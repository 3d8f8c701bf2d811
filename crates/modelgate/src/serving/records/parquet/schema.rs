//! The Parquet sink's Arrow schemas, one per record kind, the encoding of
//! records into a Parquet file (columns built directly from the record
//! types; nested outputs and tensors as list and struct columns), and its
//! inverse, rows back into records.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, GenericListArray, Int32Array, Int64Array, ListArray,
    RecordBatch, StringArray, StructArray, TimestampMillisecondArray,
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

// The inverse: rows of a `predictions/` or `outcomes/` file back into
// records (`shadow report --from s3://…` reads the tables with it). Columns
// are found by name, so files with columns added later still read; a
// missing column or a null where the schema has none is an error naming it.

/// A row's problem, named by its column.
fn missing(name: &str) -> String {
    format!("no column {name} of the expected type")
}

fn null_in(name: &str, row: usize) -> String {
    format!("column {name} is null in row {row}")
}

/// A batch's rows as records; the batch as a whole may be unreadable (a
/// column missing), and each row on its own (a null where none may be).
pub type DecodedRows = Result<Vec<Result<Record, String>>, String>;

/// Columns by name, of a batch or of a struct column.
trait Columns {
    fn named(&self, name: &str) -> Option<&ArrayRef>;

    fn strings(&self, name: &str) -> Result<&StringArray, String> {
        self.named(name).and_then(|a| a.as_string_opt::<i32>()).ok_or_else(|| missing(name))
    }

    fn i64s(&self, name: &str) -> Result<&Int64Array, String> {
        self.named(name).and_then(|a| a.as_primitive_opt::<Int64Type>()).ok_or_else(|| missing(name))
    }

    fn f64s(&self, name: &str) -> Result<&Float64Array, String> {
        self.named(name).and_then(|a| a.as_primitive_opt::<Float64Type>()).ok_or_else(|| missing(name))
    }

    fn bools(&self, name: &str) -> Result<&BooleanArray, String> {
        self.named(name).and_then(|a| a.as_boolean_opt()).ok_or_else(|| missing(name))
    }

    fn lists(&self, name: &str) -> Result<&GenericListArray<i32>, String> {
        self.named(name).and_then(|a| a.as_list_opt::<i32>()).ok_or_else(|| missing(name))
    }

    fn structs(&self, name: &str) -> Result<&StructArray, String> {
        self.named(name).and_then(|a| a.as_struct_opt()).ok_or_else(|| missing(name))
    }
}

impl Columns for RecordBatch {
    fn named(&self, name: &str) -> Option<&ArrayRef> {
        self.column_by_name(name)
    }
}

impl Columns for StructArray {
    fn named(&self, name: &str) -> Option<&ArrayRef> {
        self.column_by_name(name)
    }
}

fn text(a: &StringArray, name: &str, row: usize) -> Result<String, String> {
    opt_text(a, row).ok_or_else(|| null_in(name, row))
}

fn opt_text(a: &StringArray, row: usize) -> Option<String> {
    a.is_valid(row).then(|| a.value(row).to_owned())
}

fn int(a: &Int64Array, name: &str, row: usize) -> Result<i64, String> {
    opt(a, row).ok_or_else(|| null_in(name, row))
}

/// A count or version: written from a `u64`, so never negative.
fn unsigned(a: &Int64Array, name: &str, row: usize) -> Result<u64, String> {
    let v = int(a, name, row)?;
    u64::try_from(v).map_err(|_| format!("column {name} is negative ({v}) in row {row}"))
}

fn opt<T: arrow_array::ArrowPrimitiveType>(
    a: &arrow_array::PrimitiveArray<T>,
    row: usize,
) -> Option<T::Native> {
    a.is_valid(row).then(|| a.value(row))
}

/// The item range of a list column's row.
fn items(list: &GenericListArray<i32>, row: usize) -> std::ops::Range<usize> {
    let offsets = list.value_offsets();
    offsets[row] as usize..offsets[row + 1] as usize
}

/// The row's tensor of a tensor struct column; `None` where it is null.
fn tensor_at(t: &StructArray, row: usize) -> Result<Option<TensorValues>, String> {
    if t.is_null(row) {
        return Ok(None);
    }
    let shape = t.lists("shape")?;
    let shape_items = shape.values().as_primitive_opt::<Int64Type>().ok_or_else(|| missing("shape"))?;
    let values = t.lists("values")?;
    let value_items = values.values().as_primitive_opt::<Float64Type>().ok_or_else(|| missing("values"))?;
    let texts = t.lists("strings")?;
    let text_items = texts.values().as_string_opt::<i32>().ok_or_else(|| missing("strings"))?;
    let count = t.i64s("count")?;
    Ok(Some(TensorValues {
        dtype: text(t.strings("dtype")?, "dtype", row)?,
        shape: items(shape, row).map(|i| int(shape_items, "shape", i)).collect::<Result<_, _>>()?,
        values: items(values, row).map(|i| opt(value_items, i)).collect(),
        strings: items(texts, row).map(|i| text(text_items, "strings", i)).collect::<Result<_, _>>()?,
        truncated: opt_bool(t.bools("truncated")?, row).ok_or_else(|| null_in("truncated", row))?,
        count: unsigned(count, "count", row)?,
        min: opt(t.f64s("min")?, row),
        max: opt(t.f64s("max")?, row),
        mean: opt(t.f64s("mean")?, row),
    }))
}

fn output_at(o: &StructArray, row: usize) -> Result<OutputRecord, String> {
    Ok(OutputRecord {
        name: text(o.strings("name")?, "outputs.name", row)?,
        champion: tensor_at(o.structs("champion")?, row)?.ok_or_else(|| null_in("outputs.champion", row))?,
        shadow: tensor_at(o.structs("shadow")?, row)?,
        elements: unsigned(o.i64s("elements")?, "outputs.elements", row)?,
        max_abs_diff: opt(o.f64s("max_abs_diff")?, row),
        mean_abs_diff: opt(o.f64s("mean_abs_diff")?, row),
        agreement: opt(o.f64s("agreement")?, row),
        champion_nan_inf: unsigned(o.i64s("champion_nan_inf")?, "outputs.champion_nan_inf", row)?,
        shadow_nan_inf: unsigned(o.i64s("shadow_nan_inf")?, "outputs.shadow_nan_inf", row)?,
        mismatch: opt_text(o.strings("mismatch")?, row),
    })
}

fn schema_at(batch: &RecordBatch, row: usize) -> Result<u32, String> {
    let a = batch
        .named("schema")
        .and_then(|a| a.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| missing("schema"))?;
    let v = opt(a, row).ok_or_else(|| null_in("schema", row))?;
    u32::try_from(v).map_err(|_| format!("column schema is negative ({v}) in row {row}"))
}

/// The rows of a `predictions/` file's batch as records, the inverse of
/// what [`encode`] writes; `model` is the file's `model=` partition (not a
/// column). A row that cannot be read is an `Err` of its own, naming the
/// column, so one bad row does not hide the rest.
pub fn predictions_from(batch: &RecordBatch, model: &str) -> DecodedRows {
    let (ts, request_id, replica) =
        (batch.i64s("ts_ms")?, batch.strings("request_id")?, batch.strings("replica")?);
    let (champion_version, champion_role) =
        (batch.i64s("champion_version")?, batch.strings("champion_role")?);
    let (shadow_version, shadow_role) = (batch.i64s("shadow_version")?, batch.strings("shadow_role")?);
    let routing_key_hash = batch.strings("routing_key_hash")?;
    let (champion_latency, shadow_latency) =
        (batch.i64s("champion_latency_us")?, batch.i64s("shadow_latency_us")?);
    let shadow_error = batch.strings("shadow_error")?;
    let outputs = batch.lists("outputs")?;
    let output_items = outputs.values().as_struct_opt().ok_or_else(|| missing("outputs"))?;
    let inputs = batch.lists("inputs")?;
    let input_items = inputs.values().as_struct_opt().ok_or_else(|| missing("inputs"))?;
    let row = |i: usize| -> Result<Record, String> {
        Ok(Record::Prediction(PredictionRecord {
            schema: schema_at(batch, i)?,
            ts_ms: int(ts, "ts_ms", i)?,
            request_id: text(request_id, "request_id", i)?,
            model: model.to_owned(),
            replica: text(replica, "replica", i)?,
            champion_version: unsigned(champion_version, "champion_version", i)?,
            champion_role: text(champion_role, "champion_role", i)?,
            shadow_version: unsigned(shadow_version, "shadow_version", i)?,
            shadow_role: text(shadow_role, "shadow_role", i)?,
            routing_key_hash: opt_text(routing_key_hash, i),
            champion_latency_us: unsigned(champion_latency, "champion_latency_us", i)?,
            shadow_latency_us: unsigned(shadow_latency, "shadow_latency_us", i)?,
            shadow_error: opt_text(shadow_error, i),
            outputs: items(outputs, i).map(|k| output_at(output_items, k)).collect::<Result<_, _>>()?,
            inputs: if inputs.is_null(i) {
                None
            } else {
                Some(
                    items(inputs, i)
                        .map(|k| tensor_at(input_items, k)?.ok_or_else(|| null_in("inputs", k)))
                        .collect::<Result<_, _>>()?,
                )
            },
        }))
    };
    Ok((0..batch.num_rows()).map(row).collect())
}

/// The rows of an `outcomes/` file's batch as records (see [`predictions_from`]).
pub fn outcomes_from(batch: &RecordBatch, model: &str) -> DecodedRows {
    let (ts, request_id, replica) =
        (batch.i64s("ts_ms")?, batch.strings("request_id")?, batch.strings("replica")?);
    let (routing_key_hash, metric, value) =
        (batch.strings("routing_key_hash")?, batch.strings("metric")?, batch.f64s("value")?);
    let (joined, version, role) = (batch.bools("joined")?, batch.i64s("version")?, batch.strings("role")?);
    let row = |i: usize| -> Result<Record, String> {
        Ok(Record::Outcome(OutcomeRecord {
            schema: schema_at(batch, i)?,
            ts_ms: int(ts, "ts_ms", i)?,
            request_id: text(request_id, "request_id", i)?,
            model: model.to_owned(),
            replica: text(replica, "replica", i)?,
            routing_key_hash: opt_text(routing_key_hash, i),
            metric: text(metric, "metric", i)?,
            value: opt(value, i).ok_or_else(|| null_in("value", i))?,
            joined: opt_bool(joined, i).ok_or_else(|| null_in("joined", i))?,
            version: if version.is_valid(i) { Some(unsigned(version, "version", i)?) } else { None },
            role: opt_text(role, i),
        }))
    };
    Ok((0..batch.num_rows()).map(row).collect())
}

fn opt_bool(a: &BooleanArray, row: usize) -> Option<bool> {
    a.is_valid(row).then(|| a.value(row))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    fn tensor(dtype: &str, values: Vec<Option<f64>>) -> TensorValues {
        TensorValues {
            dtype: dtype.into(),
            shape: vec![1, values.len() as i64],
            count: values.len() as u64,
            values,
            strings: Vec::new(),
            truncated: false,
            min: Some(-0.5),
            max: Some(0.75),
            mean: Some(0.125),
        }
    }

    /// Over the size cap: statistics only.
    fn summary(count: u64) -> TensorValues {
        TensorValues {
            dtype: "FP64".into(),
            shape: vec![2, count as i64 / 2],
            values: Vec::new(),
            strings: Vec::new(),
            truncated: true,
            count,
            min: None,
            max: Some(3.5),
            mean: Some(1.0e-300),
        }
    }

    fn strings(texts: &[&str]) -> TensorValues {
        TensorValues {
            dtype: "BYTES".into(),
            shape: vec![texts.len() as i64],
            values: Vec::new(),
            strings: texts.iter().map(|s| (*s).to_owned()).collect(),
            truncated: false,
            count: texts.len() as u64,
            min: None,
            max: None,
            mean: None,
        }
    }

    fn output(name: &str, champion: TensorValues, shadow: Option<TensorValues>) -> OutputRecord {
        OutputRecord {
            name: name.into(),
            elements: if shadow.is_some() { champion.count } else { 0 },
            max_abs_diff: shadow.as_ref().map(|_| 0.1 + 0.2),
            mean_abs_diff: shadow.as_ref().map(|_| f64::MIN_POSITIVE),
            agreement: None,
            champion_nan_inf: 1,
            shadow_nan_inf: u64::from(shadow.is_some()) * 2,
            mismatch: shadow.is_none().then(|| "the shadow has no output \"p\"".to_owned()),
            champion,
            shadow,
        }
    }

    /// Every field of both kinds, in every state it can be in: nulls, NaN
    /// elements (null items), summaries, strings, inputs absent, empty and
    /// present, u64 counts past 2^53.
    fn records() -> (Vec<Record>, Vec<Record>) {
        let base = PredictionRecord {
            schema: SCHEMA_VERSION,
            ts_ms: 1_796_637_600_123,
            request_id: "req-ü-1".into(),
            model: "iris".into(),
            replica: "gw-0".into(),
            champion_version: 3,
            champion_role: "champion".into(),
            shadow_version: 4,
            shadow_role: "shadow".into(),
            routing_key_hash: Some("00ff00ff00ff00ff".into()),
            champion_latency_us: 1_234,
            shadow_latency_us: (1 << 53) + 1,
            shadow_error: None,
            outputs: vec![
                output(
                    "p",
                    tensor("FP32", vec![Some(0.1), None, Some(-0.0)]),
                    Some(tensor("FP32", vec![None])),
                ),
                OutputRecord {
                    agreement: Some(2.0 / 3.0),
                    max_abs_diff: None,
                    mean_abs_diff: None,
                    ..output("label", strings(&["a", "", "ß"]), Some(strings(&["a", "b", "ß"])))
                },
                output("embedding", summary(5000), Some(summary(5000))),
            ],
            inputs: None,
        };
        let failed = PredictionRecord {
            request_id: "req-2".into(),
            routing_key_hash: None,
            shadow_error: Some("deadline exceeded".into()),
            outputs: vec![output("p", tensor("FP32", vec![Some(1.0)]), None)],
            inputs: Some(vec![tensor("INT64", vec![Some(7.0), Some(-8.0)]), summary(64), strings(&["x"])]),
            ..base.clone()
        };
        let empty = PredictionRecord {
            request_id: "req-3".into(),
            outputs: Vec::new(),
            inputs: Some(Vec::new()),
            ..base.clone()
        };
        let outcome = OutcomeRecord {
            schema: SCHEMA_VERSION,
            ts_ms: 5,
            request_id: "req-1".into(),
            model: "iris".into(),
            replica: "gw-1".into(),
            routing_key_hash: Some("00ff00ff00ff00ff".into()),
            metric: "revenue".into(),
            value: -12.5,
            joined: true,
            version: Some(3),
            role: Some("champion".into()),
        };
        let unjoined = OutcomeRecord {
            request_id: "req-x".into(),
            routing_key_hash: None,
            joined: false,
            version: None,
            role: None,
            value: f64::MAX,
            ..outcome.clone()
        };
        (
            [base, failed, empty].into_iter().map(Record::Prediction).collect(),
            [outcome, unjoined].into_iter().map(Record::Outcome).collect(),
        )
    }

    fn decode(file: bytes::Bytes, from: fn(&RecordBatch, &str) -> DecodedRows) -> Vec<Record> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        reader.flat_map(|batch| from(&batch.unwrap(), "iris").unwrap()).map(Result::unwrap).collect()
    }

    #[test]
    fn rows_read_back_are_the_records_written_field_for_field() {
        let (predictions, outcomes) = records();
        assert_eq!(decode(encode(&predictions).unwrap(), predictions_from), predictions);
        assert_eq!(decode(encode(&outcomes).unwrap(), outcomes_from), outcomes);
    }

    #[test]
    fn a_file_of_another_shape_is_refused_naming_the_column() {
        let (_, outcomes) = records();
        let file = encode(&outcomes).unwrap();
        let batch =
            ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().next().unwrap().unwrap();
        let e = predictions_from(&batch, "iris").unwrap_err();
        assert!(e.contains("champion_version"), "{e}");
        // A row with a null where the schema has none is an error of its own.
        let mut columns = batch.columns().to_vec();
        columns[6] = Arc::new(StringArray::from(vec![Some("clicks"), None]));
        let fields: Vec<Field> =
            outcome_schema().fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
        let loose = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let rows = outcomes_from(&loose, "iris").unwrap();
        assert!(rows[0].is_ok());
        assert_eq!(rows[1].as_ref().unwrap_err(), "column metric is null in row 1");
    }
}
