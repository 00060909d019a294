"""Documents written in the tests by the libraries that make them (reportlab, python-docx) or by
hand (HTML): shared by the tests of reading, collections, dense search and hostile files."""

from __future__ import annotations


def write_pdf(path, pages: list[str], encrypt: str | None = None, text: bool = True):
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4, encrypt=encrypt)
    c.setTitle("Discharge letter")
    for page in pages:
        if text:
            y = 800
            for line in page.split("\n"):
                c.drawString(72, y, line)
                y -= 16
        else:
            c.rect(72, 400, 200, 200, fill=1)  # a drawing, no text: what a scan looks like to a reader
        c.showPage()
    c.save()
    return path


def write_docx(path):
    import docx

    d = docx.Document()
    d.core_properties.title = "Leave policy"
    d.add_heading("Annual leave", level=1)
    d.add_paragraph("Every employee has 25 days of annual leave.")
    d.add_heading("Sick leave", level=1)
    d.add_paragraph("Sick leave needs a doctor's note after three days.")
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Grade", "Days"
    table.cell(1, 0).text, table.cell(1, 1).text = "Senior", "30"
    d.save(str(path))
    return path


PAGE = """<html><head><title>Course notes: photosynthesis</title></head><body>
<nav><a href="/">Home</a> | <a href="/about">About us</a> | <a href="/login">Log in</a></nav>
<article><h1>Photosynthesis</h1>
<p>Photosynthesis is the process by which green plants turn light energy into chemical energy. It takes
place mostly in the leaves, inside the chloroplasts, where chlorophyll absorbs red and blue light.</p>
<p>The light reactions split water and release oxygen; the Calvin cycle then fixes carbon dioxide into
sugars that the plant uses for growth and stores as starch.</p></article>
<footer>Copyright 2026 Example School. All rights reserved. Privacy policy.</footer></body></html>"""
