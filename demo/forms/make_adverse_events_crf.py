"""Writes demo/forms/adverse_events_crf.xlsx and .xls, the demo OpenClinica 3 CRF design template.

The layout is OpenClinica 3's template (sheets CRF, Sections, Groups, Items, Instructions; the
Items sheet with its 27 columns; `*` marking required columns as the v3.9 template does). The
content is ours. Run `pip install openpyxl xlwt && python3 demo/forms/make_adverse_events_crf.py`
after editing the rows below; both files are committed so nothing needs Python at build or test
time. OpenClinica itself reads only the BIFF8 `.xls`; Casebook reads both.
"""
from pathlib import Path

CRF = [
    ["CRF_NAME*", "VERSION*", "VERSION_DESCRIPTION*", "REVISION_NOTES*"],
    ["Adverse Events", "v1.0", "Adverse event log with seriousness, action taken and outcome",
     "First version for the Casebook demo study"],
]

SECTIONS = [
    ["SECTION_LABEL*", "SECTION_TITLE*", "SUBTITLE", "INSTRUCTIONS", "PAGE_NUMBER", "PARENT_SECTION"],
    ["AE_SCREEN", "Adverse event screening", "Since the last visit", "Ask the participant about any new or worsening symptoms.", "1", ""],
    ["AE_LOG", "Adverse event log", "One row per event",
     "Record each event once, with the <b>worst</b> severity reached.", "2", ""],
    ["AE_ASSESS", "Participant assessment", "", "Weigh the participant without shoes.", "3", ""],
]

GROUPS = [
    ["GROUP_LABEL*", "GROUP_LAYOUT", "GROUP_HEADER", "GROUP_REPEAT_NUMBER", "GROUP_REPEAT_MAX", "GROUP_DISPLAY_STATUS"],
    ["AE", "GRID", "Adverse events", "3", "25", ""],
    ["ASSESS", "NON-REPEATING", "", "", "", "SHOW"],
]

ITEM_COLUMNS = [
    "ITEM_NAME*", "DESCRIPTION_LABEL*", "LEFT_ITEM_TEXT", "UNITS", "RIGHT_ITEM_TEXT", "SECTION_LABEL*", "GROUP_LABEL",
    "HEADER", "SUBHEADER", "PARENT_ITEM", "COLUMN_NUMBER", "PAGE_NUMBER", "QUESTION_NUMBER", "RESPONSE_TYPE*",
    "RESPONSE_LABEL", "RESPONSE_OPTIONS_TEXT", "RESPONSE_VALUES_OR_CALCULATIONS", "RESPONSE_LAYOUT", "DEFAULT_VALUE",
    "DATA_TYPE*", "WIDTH_DECIMAL", "VALIDATION", "VALIDATION_ERROR_MESSAGE", "PHI", "REQUIRED", "ITEM_DISPLAY_STATUS",
    "SIMPLE_CONDITIONAL_DISPLAY",
]


def item(name, description, left, section, response, data_type, **more):
    """One Items row; `more` names other columns in lower case (units="kg")."""
    values = {
        "ITEM_NAME": name, "DESCRIPTION_LABEL": description, "LEFT_ITEM_TEXT": left, "SECTION_LABEL": section,
        "RESPONSE_TYPE": response, "DATA_TYPE": data_type,
    }
    values.update({k.upper(): v for k, v in more.items()})
    return [values.get(c.rstrip("*"), "") for c in ITEM_COLUMNS]


YES_NO = dict(response_label="yes_no", response_options_text="Yes,No", response_values_or_calculations="1,0",
              response_layout="Horizontal")

ITEMS = [
    ITEM_COLUMNS,
    item("AE_ANY", "Any adverse event since the last visit", "Did the participant have any adverse event since the last visit?",
         "AE_SCREEN", "radio", "INT", question_number="1", required="1", **YES_NO),
    item("AE_TERM", "Adverse event verbatim term", "Adverse event", "AE_LOG", "text", "ST", group_label="AE",
         width_decimal="200", required="1"),
    item("AE_START", "Adverse event onset date", "Onset date", "AE_LOG", "text", "DATE", group_label="AE", required="1"),
    item("AE_END", "Adverse event end date (year, month and year, or full date)", "End date", "AE_LOG", "text", "PDATE",
         group_label="AE"),
    item("AE_SEV", "Adverse event severity", "Severity", "AE_LOG", "radio", "INT", group_label="AE",
         response_label="severity", response_options_text="Mild,Moderate,Severe", response_values_or_calculations="1,2,3",
         required="1"),
    # Reuses the yes_no response set defined by AE_ANY: options left blank.
    item("AE_SER", "Serious adverse event", "Serious?", "AE_LOG", "radio", "INT", group_label="AE",
         response_label="yes_no", required="1"),
    item("AE_ACTION", "Action taken with study treatment", "Action taken", "AE_LOG", "checkbox", "ST", group_label="AE",
         response_label="ae_action",
         response_options_text="None,Dose reduced,Drug interrupted,Drug withdrawn,Concomitant medication given",
         response_values_or_calculations="NONE,REDUCED,INTERRUPTED,WITHDRAWN,CONMED"),
    item("AE_OUTCOME", "Adverse event outcome", "Outcome", "AE_LOG", "single-select", "INT", group_label="AE",
         response_label="ae_outcome",
         response_options_text="Recovered,Recovering,Not recovered,Recovered\\, with sequelae,Fatal,Unknown",
         response_values_or_calculations="1,2,3,4,5,6", default_value="--select--"),
    item("WEIGHT", "Body weight", "Weight", "AE_ASSESS", "text", "REAL", group_label="ASSESS", units="kg",
         header="Body measurements", question_number="2a", width_decimal="5(1)",
         validation="func: range(20, 300)", validation_error_message="Weight must be between 20 and 300 kg",
         required="1"),
    item("HEIGHT", "Body height", "Height", "AE_ASSESS", "text", "REAL", group_label="ASSESS", units="cm",
         question_number="2b", width_decimal="5(1)", validation="func: range(100, 250)",
         validation_error_message="Height must be between 100 and 250 cm", required="1"),
    item("BMI", "Body mass index, calculated", "Body mass index", "AE_ASSESS", "calculation", "REAL",
         group_label="ASSESS", units="kg/m2", right_item_text="calculated on save", response_label="bmi",
         response_options_text="BMI",
         response_values_or_calculations="func: WEIGHT / ((HEIGHT / 100) * (HEIGHT / 100))"),
    item("INITIALS", "Participant initials", "Initials", "AE_ASSESS", "text", "ST", group_label="ASSESS",
         subheader="Two or three capital letters", width_decimal="3", validation="regexp: /[A-Z]{2,3}/",
         validation_error_message="Write two or three capital letters", phi="1"),
    item("HOSP", "Hospitalised for an adverse event", "Was the participant hospitalised for an adverse event?",
         "AE_ASSESS", "radio", "INT", group_label="ASSESS", question_number="3", response_label="yes_no"),
    item("HOSP_DAYS", "Days in hospital", "How many days?", "AE_ASSESS", "text", "INT", group_label="ASSESS",
         units="days", width_decimal="3", validation="func: gte(1)",
         validation_error_message="At least one day", item_display_status="HIDE",
         simple_conditional_display="HOSP, 1, Days in hospital apply only when the participant was hospitalised"),
    item("COMMENTS", "Investigator comments", "Comments", "AE_ASSESS", "textarea", "ST", group_label="ASSESS"),
]

INSTRUCTIONS = [
    ["Casebook demo CRF: adverse events"],
    ["Version: 3.9"],
    ["Generated by demo/forms/make_adverse_events_crf.py; edit the script, not the workbook."],
]

SHEETS = (("CRF", CRF), ("Sections", SECTIONS), ("Groups", GROUPS), ("Items", ITEMS), ("Instructions", INSTRUCTIONS))


def write_xlsx(path: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    for i, (title, rows) in enumerate(SHEETS):
        ws = wb.active if i == 0 else wb.create_sheet(title)
        ws.title = title
        for row in rows:
            ws.append(row)
    wb.save(path)


def write_xls(path: Path) -> None:
    import xlwt

    wb = xlwt.Workbook(encoding="utf-8")
    for title, rows in SHEETS:
        ws = wb.add_sheet(title)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if value != "":
                    ws.write(r, c, value)
    wb.save(str(path))


def main() -> None:
    here = Path(__file__).parent
    write_xlsx(here / "adverse_events_crf.xlsx")
    write_xls(here / "adverse_events_crf.xls")


if __name__ == "__main__":
    main()
