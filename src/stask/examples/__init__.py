"""Example workers for the quickstart: ``STASK_WORKERS=stask.examples stask run``.

They are written to be copied: each action validates its options, reports progress as it goes,
logs what it skips, and returns a JSON result or a file. Generated data is seeded, so every run
of the same options produces the same files.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stask import BaseWorker, TaskContext
from stask.models import JSONDict

__all__ = ["Cleanup", "ProductExport", "ProductImport", "SalesReport"]

CSV_HEADER = ("sku", "name", "price", "stock")
DEFAULT_ROWS = 200
DEFAULT_DELAY = 0.01  # seconds per row: slow enough to watch the progress bar move
SEED = 20240601
# Every Nth generated import row has a broken price, so the sample run shows a skipped row
# in the task log.
BROKEN_PRICE_EVERY = 50

_ADJECTIVES = ("Classic", "Compact", "Deluxe", "Eco", "Pro", "Smart", "Travel", "Urban")
_NOUNS = ("Backpack", "Bottle", "Headphones", "Jacket", "Lamp", "Mug", "Notebook", "Sneakers")
_REGIONS = ("North", "South", "East", "West")


class InvalidOption(ValueError):
    """An option has a value the action cannot use; the task fails without retrying."""


def _int_option(options: Mapping[str, Any], name: str, default: int, minimum: int = 0) -> int:
    """An integer option; digits in a string count too (forms and the CLI send text)."""
    value = options.get(name, default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidOption(f"option {name!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _delay_option(options: Mapping[str, Any]) -> float:
    value = options.get("delay", DEFAULT_DELAY)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # reported below with the value as given
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 60:
        raise InvalidOption(f"option 'delay' must be a number of seconds 0-60, got {value!r}")
    return float(value)


def _pause(seconds: float) -> None:
    """Stand-in for real work per row (a database write, an API call)."""
    if seconds > 0:
        time.sleep(seconds)


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    price: float
    stock: int

    def csv_row(self) -> tuple[str, str, str, str]:
        return (self.sku, self.name, f"{self.price:.2f}", str(self.stock))


def sample_products(count: int, seed: int = SEED) -> Iterator[Product]:
    """``count`` made-up products, the same ones for the same ``seed``."""
    rng = random.Random(seed)
    for number in range(1, count + 1):
        name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
        price = round(rng.uniform(2, 250), 2)
        yield Product(f"SKU-{number:05d}", name, price, rng.randint(0, 500))


def write_sample_csv(path: Path, rows: int) -> Path:
    """A CSV to import, with a broken price every ``BROKEN_PRICE_EVERY`` rows."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        for number, product in enumerate(sample_products(rows), start=1):
            row = list(product.csv_row())
            if number % BROKEN_PRICE_EVERY == 0:
                row[2] = "n/a"
            writer.writerow(row)
    return path


def _parse_price(text: str) -> float | None:
    """The price in ``text``, or None unless it is a finite number >= 0."""
    try:
        price = float(text)
    except ValueError:
        return None
    return price if math.isfinite(price) and price >= 0 else None


class ProductImport(BaseWorker):
    """Read products from a CSV file (header ``sku,name,price,stock``) row by row."""

    identifier = "product_import"
    scope = "shop"
    icon = "upload"
    title = "Product import"
    description = "Import products from a CSV file (sku, name, price, stock)"

    def task_import(self, task: TaskContext, options: dict[str, Any]) -> JSONDict | None:
        """Options: ``file`` (CSV path; a sample of ``rows`` rows if absent), ``delay``."""
        try:
            delay = _delay_option(options)
            rows = _int_option(options, "rows", DEFAULT_ROWS, minimum=1)
        except InvalidOption as err:
            task.mark_failed(str(err))
            return None
        if options.get("file") is None:
            path = write_sample_csv(task.storage_path("sample.csv"), rows)
            task.log("info", f"No file given: generated a sample of {rows} rows", file=path.name)
        else:
            path = Path(str(options["file"]))
            if not path.is_file():
                task.mark_failed(f"Import file not found: {path}")
                return None

        # Count first, so the progress bar and the ETA know the total from the start.
        # utf-8-sig also reads files saved by Excel, which start with a byte order mark.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            total = sum(1 for _ in csv.DictReader(handle))
        task.progress(processed=0, total=total, message=f"Importing {total} rows")

        imported = skipped = 0
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [column for column in CSV_HEADER if column not in (reader.fieldnames or [])]
            if missing:
                task.mark_failed(f"{path.name} lacks the column(s): {', '.join(missing)}")
                return None
            for number, row in enumerate(reader, start=1):
                sku = (row["sku"] or "").strip()
                price = _parse_price((row["price"] or "").strip())
                if price is None:
                    skipped += 1
                    task.log(
                        "warning",
                        f"Line {reader.line_num}: price {row['price']!r} is not a valid "
                        "number, row skipped",
                        line=reader.line_num,
                        sku=sku,
                    )
                else:
                    # A real worker would write the product to its catalogue here.
                    imported += 1
                _pause(delay)
                task.progress(
                    processed=number,
                    total=total,
                    message=f"Imported **{number}** of {total}: {sku}",
                )
        task.mark_finished(f"Imported **{imported}** products, skipped {skipped}")
        return {"imported": imported, "skipped": skipped}


class ProductExport(BaseWorker):
    """Write products to a CSV file the task offers for download."""

    identifier = "product_export"
    scope = "shop"
    icon = "download"
    title = "Product export"
    description = "Export products to a downloadable CSV file"

    def task_export(self, task: TaskContext, options: dict[str, Any]) -> Path | None:
        """Options: ``rows`` (how many products, default 200), ``delay``."""
        try:
            rows = _int_option(options, "rows", DEFAULT_ROWS)
            delay = _delay_option(options)
        except InvalidOption as err:
            task.mark_failed(str(err))
            return None
        path = task.storage_path("products.csv")
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_HEADER)
            for number, product in enumerate(sample_products(rows), start=1):
                writer.writerow(product.csv_row())
                _pause(delay)
                task.progress(
                    processed=number, total=rows, message=f"Exported **{number}** of {rows}"
                )
        task.mark_finished(f"Exported **{rows}** products to {path.name}")
        # A Path under storage becomes a downloadable result: {"file", "name", "size"}.
        return path


@dataclass(frozen=True, slots=True)
class Sale:
    day: dt.date
    region: str
    sku: str
    quantity: int
    unit_price: float

    @property
    def revenue(self) -> float:
        return self.quantity * self.unit_price


class SalesReport(BaseWorker):
    """A report in stages, each owning a slice of the progress bar."""

    identifier = "sales_report"
    scope = "shop"
    icon = "bar-chart"
    title = "Sales report"
    description = "Summarise sales by region and product into a Markdown report"

    def task_generate(self, task: TaskContext, options: dict[str, Any]) -> Path | None:
        """Options: ``rows`` (sales to analyse, default 200), ``delay``.

        Stages: collect 0-20 %, analyse 20-80 % (row by row), render 80-100 %.
        """
        try:
            rows = _int_option(options, "rows", DEFAULT_ROWS, minimum=1)
            delay = _delay_option(options)
        except InvalidOption as err:
            task.mark_failed(str(err))
            return None

        task.progress(percent=0, message="Collecting sales")
        sales = self._collect(rows)
        task.progress(percent=20, message=f"Collected **{len(sales)}** sales")

        by_region: dict[str, float] = defaultdict(float)
        by_product: Counter[str] = Counter()
        revenue = 0.0
        for number, sale in enumerate(sales, start=1):
            by_region[sale.region] += sale.revenue
            by_product[sale.sku] += sale.quantity
            revenue += sale.revenue
            _pause(delay)
            task.progress(
                percent=20 + 60 * number // len(sales),
                message=f"Analysed **{number}** of {len(sales)} sales",
            )

        task.progress(percent=80, message="Rendering the report")
        path = task.storage_path("sales-report.md")
        path.write_text(_render_report(sales, revenue, by_region, by_product), encoding="utf-8")
        task.progress(percent=100, message=f"Report ready: {path.name}")
        task.mark_finished(f"Sales report of **{len(sales)}** sales, revenue {revenue:,.2f}")
        return path

    @staticmethod
    def _collect(rows: int) -> list[Sale]:
        """Stand-in for a query against the shop's orders."""
        products = list(sample_products(20))
        rng = random.Random(SEED + rows)
        start = dt.date(2024, 1, 1)
        sales = []
        for _ in range(rows):
            product = rng.choice(products)
            sales.append(
                Sale(
                    day=start + dt.timedelta(days=rng.randrange(90)),
                    region=rng.choice(_REGIONS),
                    sku=product.sku,
                    quantity=rng.randint(1, 5),
                    unit_price=product.price,
                )
            )
        return sales


def _render_report(
    sales: list[Sale],
    revenue: float,
    by_region: Mapping[str, float],
    by_product: Counter[str],
) -> str:
    first = min(sale.day for sale in sales)
    last = max(sale.day for sale in sales)
    lines = [
        "# Sales report",
        "",
        f"{len(sales)} sales from {first.isoformat()} to {last.isoformat()}, "
        f"revenue **{revenue:,.2f}**.",
        "",
        "## Revenue by region",
        "",
        "| Region | Revenue | Share |",
        "|---|---:|---:|",
    ]
    for region, amount in sorted(by_region.items(), key=lambda item: -item[1]):
        lines.append(f"| {region} | {amount:,.2f} | {amount / revenue:.0%} |")
    lines += ["", "## Top products", "", "| SKU | Units sold |", "|---|---:|"]
    for sku, units in by_product.most_common(5):
        lines.append(f"| {sku} | {units} |")
    return "\n".join(lines) + "\n"


class Cleanup(BaseWorker):
    """Housekeeping: remove finished tasks, logs and files older than ``days``."""

    identifier = "cleanup"
    scope = "system"
    icon = "trash"
    title = "Cleanup"
    description = "Delete finished tasks, logs and orphaned files past the retention period"

    def settings(self) -> JSONDict:
        return {"days": 30}

    def task_clean(self, task: TaskContext, options: dict[str, Any]) -> JSONDict | None:
        """Options: ``days`` (retention; the worker's ``days`` setting if absent)."""
        try:
            days = _int_option(options, "days", self.get_config("days", 30))
        except InvalidOption as err:
            task.mark_failed(str(err))
            return None
        task.progress(percent=0, message=f"Removing finished tasks older than {days} days")
        tasks = self.app.clean_old_tasks(days)
        task.progress(percent=33, message=f"Removed {tasks} tasks; now logs")
        logs = self.app.clean_old_logs(days)
        task.progress(percent=66, message=f"Removed {logs} log lines; now files")
        files = self.app.clean_old_files(days)
        task.progress(percent=100, message="Done")
        task.mark_finished(f"Removed {tasks} tasks, {logs} log lines and {files} file folders")
        return {"tasks": tasks, "logs": logs, "files": files}
