//! Columnar data files, as the `datasets` library and pandas write them: parquet (`.parquet`,
//! uncompressed or snappy) and Arrow IPC (`.arrow`: the stream format `datasets` caches and
//! `save_to_disk` write, or the file format). A text column is read from strings; a label column
//! from strings or integers (a ClassLabel column holds class indices, which `data.label_names`
//! names).

use std::{fs::File, io::Read, path::Path};

use arrow_array::{cast::AsArray, types::*, Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType};

/// One row: its text and its label, `None` where the row holds no value.
pub type Row = (Option<String>, Option<String>);

/// The rows of `text_column` (and `label_column`) of a `.parquet` or `.arrow` file; `Err` says
/// what is wrong, for the caller to name the file.
pub fn read(path: &Path, text_column: &str, label_column: Option<&str>) -> Result<Vec<Row>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let batches: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>>> = if is_parquet(path) {
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| format!("not a readable parquet file ({e})"))?;
        Box::new(builder.build().map_err(|e| format!("not a readable parquet file ({e})"))?)
    } else if starts_with_file_magic(path)? {
        Box::new(
            arrow_ipc::reader::FileReader::try_new(file, None)
                .map_err(|e| format!("not a readable Arrow IPC file ({e})"))?,
        )
    } else {
        Box::new(
            arrow_ipc::reader::StreamReader::try_new(file, None)
                .map_err(|e| format!("not a readable Arrow IPC stream ({e})"))?,
        )
    };
    let mut rows = Vec::new();
    for batch in batches {
        let batch = batch.map_err(|e| {
            let error = e.to_string();
            match error.split_once("Disabled feature at compile time: ") {
                Some((_, codec)) => format!(
                    "compressed with {codec}, which the workbench does not read: write it with snappy compression \
                     (pyarrow's and datasets' default) or none"
                ),
                None => format!("unreadable record batch ({error})"),
            }
        })?;
        let texts = strings(&batch, text_column, false)?;
        let labels = match label_column {
            Some(column) => strings(&batch, column, true)?,
            None => vec![None; texts.len()],
        };
        rows.extend(texts.into_iter().zip(labels));
    }
    Ok(rows)
}

fn is_parquet(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// Whether the file starts as the Arrow IPC file format does (`ARROW1`); the stream format
/// does not.
fn starts_with_file_magic(path: &Path) -> Result<bool, String> {
    let mut magic = [0u8; 6];
    let read = File::open(path).and_then(|mut f| f.read(&mut magic)).map_err(|e| e.to_string())?;
    Ok(read == 6 && &magic == b"ARROW1")
}

/// A column's values as text: strings as they are, integers (when `integers` are allowed, for
/// labels) as decimal numbers; `None` for a null.
fn strings(batch: &RecordBatch, name: &str, integers: bool) -> Result<Vec<Option<String>>, String> {
    let schema = batch.schema();
    let Ok(index) = schema.index_of(name) else {
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(format!("no column `{name}` (columns: {})", columns.join(", ")));
    };
    let column: &ArrayRef = batch.column(index);
    fn texts<'a>(values: impl Iterator<Item = Option<&'a str>>) -> Vec<Option<String>> {
        values.map(|v| v.map(str::to_string)).collect()
    }
    fn numbers<T: ToString>(values: impl Iterator<Item = Option<T>>) -> Vec<Option<String>> {
        values.map(|v| v.map(|n| n.to_string())).collect()
    }
    Ok(match column.data_type() {
        DataType::Utf8 => texts(column.as_string::<i32>().iter()),
        DataType::LargeUtf8 => texts(column.as_string::<i64>().iter()),
        DataType::Utf8View => texts(column.as_string_view().iter()),
        DataType::Int8 if integers => numbers(column.as_primitive::<Int8Type>().iter()),
        DataType::Int16 if integers => numbers(column.as_primitive::<Int16Type>().iter()),
        DataType::Int32 if integers => numbers(column.as_primitive::<Int32Type>().iter()),
        DataType::Int64 if integers => numbers(column.as_primitive::<Int64Type>().iter()),
        DataType::UInt8 if integers => numbers(column.as_primitive::<UInt8Type>().iter()),
        DataType::UInt16 if integers => numbers(column.as_primitive::<UInt16Type>().iter()),
        DataType::UInt32 if integers => numbers(column.as_primitive::<UInt32Type>().iter()),
        DataType::UInt64 if integers => numbers(column.as_primitive::<UInt64Type>().iter()),
        other => {
            let wanted = if integers { "strings or integers (class indices)" } else { "strings" };
            return Err(format!("column `{name}` holds {other} values; it must hold {wanted}"));
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float64Array, Int64Array, StringArray};
    use arrow_schema::{Field, Schema};

    use super::*;

    fn batch(labels: ArrayRef) -> RecordBatch {
        let texts: ArrayRef = Arc::new(StringArray::from(vec![Some("first text"), None, Some("third")]));
        let schema = Schema::new(vec![
            Field::new("text", DataType::Utf8, true),
            Field::new("label", labels.data_type().clone(), true),
        ]);
        RecordBatch::try_new(Arc::new(schema), vec![texts, labels]).unwrap()
    }

    /// The batch written as parquet, Arrow IPC stream and Arrow IPC file.
    fn written(dir: &Path, batch: &RecordBatch) -> Vec<std::path::PathBuf> {
        let parquet = dir.join("data.parquet");
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(File::create(&parquet).unwrap(), batch.schema(), None).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
        let stream = dir.join("stream.arrow");
        let mut writer =
            arrow_ipc::writer::StreamWriter::try_new(File::create(&stream).unwrap(), &batch.schema()).unwrap();
        writer.write(batch).unwrap();
        writer.finish().unwrap();
        let file = dir.join("file.arrow");
        let mut writer = arrow_ipc::writer::FileWriter::try_new(File::create(&file).unwrap(), &batch.schema()).unwrap();
        writer.write(batch).unwrap();
        writer.finish().unwrap();
        vec![parquet, stream, file]
    }

    #[test]
    fn parquet_and_both_arrow_formats_give_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let labels: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(0), None]));
        for path in written(dir.path(), &batch(labels)) {
            let rows = read(&path, "text", Some("label")).unwrap();
            let expected: Vec<Row> = vec![
                (Some("first text".into()), Some("1".into())),
                (None, Some("0".into())),
                (Some("third".into()), None),
            ];
            assert_eq!(rows, expected, "{}", path.display());
            assert_eq!(read(&path, "text", None).unwrap()[2], (Some("third".into()), None));
            assert_eq!(read(&path, "body", None).unwrap_err(), "no column `body` (columns: text, label)");
        }
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 0.0, 2.0]));
        let path = written(dir.path(), &batch(floats)).remove(0);
        assert_eq!(
            read(&path, "text", Some("label")).unwrap_err(),
            "column `label` holds Float64 values; it must hold strings or integers (class indices)"
        );
        let not_parquet = dir.path().join("text.parquet");
        std::fs::write(&not_parquet, "text,label\n").unwrap();
        assert!(read(&not_parquet, "text", None).unwrap_err().starts_with("not a readable parquet file ("));
    }
}
