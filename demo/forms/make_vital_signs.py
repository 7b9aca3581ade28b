"""Writes demo/forms/vital_signs.xlsx, the demo study's XLSForm (OpenClinica 4 style columns).

Run `pip install openpyxl && python3 demo/forms/make_vital_signs.py` after editing the rows
below; the .xlsx is committed so nothing needs Python at build or test time.
"""
from pathlib import Path

from openpyxl import Workbook

SURVEY = [
    ["type", "name", "label", "label::Français (fr)", "bind::oc:itemgroup", "hint", "bind::oc:briefdescription",
     "relevant", "required", "required_message", "constraint", "constraint_message", "calculation", "default", "readonly",
     "appearance", "repeat_count"],
    ["begin group", "vitals", "Vital signs", "Signes vitaux", "", "", "", "", "", "", "", "", "", "", "", "field-list", ""],
    ["date", "vs_date", "Date of measurement", "Date de la mesure", "vs", "", "Measurement date", "", "yes",
     "The date is required", ". <= today()", "The date cannot be in the future", "", "", "", "", ""],
    ["decimal", "weight", "Weight (kg)", "Poids (kg)", "vs", "Without shoes", "Weight", "", "yes", "",
     ". >= 20 and . <= 300", "Weight must be between 20 and 300 kg", "", "", "", "", ""],
    ["decimal", "height", "Height (cm)", "Taille (cm)", "vs", "", "Height", "", "yes", "",
     ". >= 100 and . <= 250", "Height must be between 100 and 250 cm", "", "", "", "", ""],
    ["calculate", "bmi", "", "", "vs", "", "BMI", "", "", "", "", "",
     "round(${weight} div ((${height} div 100) * (${height} div 100)), 1)", "", "", "", ""],
    ["note", "bmi_note", "Body mass index: ${bmi}", "Indice de masse corporelle : ${bmi}", "vs", "", "", "", "", "", "",
     "", "", "", "", "", ""],
    ["integer", "sys", "Systolic blood pressure (mmHg)", "Pression systolique (mmHg)", "vs", "", "Systolic BP", "",
     "yes", "", ". >= 60 and . <= 250", "Systolic pressure must be between 60 and 250 mmHg", "", "", "", "", ""],
    ["integer", "dia", "Diastolic blood pressure (mmHg)", "Pression diastolique (mmHg)", "vs", "", "Diastolic BP", "",
     "yes", "", ". >= 30 and . < ${sys}", "Diastolic pressure must be at least 30 and lower than systolic", "", "", "",
     "", ""],
    ["select_one yn", "abnormal", "Any clinically significant abnormal finding?", "Anomalie cliniquement significative ?",
     "vs", "", "Abnormal finding", "", "yes", "", "", "", "", "no", "", "", ""],
    ["text", "abnormal_desc", "Describe the finding", "Décrire l'anomalie", "vs", "", "Abnormal finding description",
     "${abnormal} = 'yes'", "yes", "", "string-length(.) <= 200", "At most 200 characters", "", "", "", "", ""],
    ["end group", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", ""],
    ["begin repeat", "ecg_readings", "ECG readings", "Lectures ECG", "ecg", "", "", "", "", "", "", "", "", "", "", "",
     ""],
    ["time", "ecg_time", "Time of reading", "Heure de la lecture", "ecg", "", "ECG time", "", "yes", "", "", "", "", "",
     "", "", ""],
    ["integer", "hr", "Heart rate (bpm)", "Fréquence cardiaque (bpm)", "ecg", "", "Heart rate", "", "yes", "",
     ". >= 20 and . <= 250", "Heart rate must be between 20 and 250 bpm", "", "", "", "", ""],
    ["select_multiple ecg_findings", "ecg_find", "Findings", "Observations", "ecg", "", "ECG findings", "", "", "",
     "not(selected(., 'normal') and count-selected(.) > 1)", "'Normal' cannot be combined with other findings", "", "",
     "", "", ""],
    ["end repeat", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", ""],
]

CHOICES = [
    ["list_name", "name", "label", "label::Français (fr)"],
    ["yn", "yes", "Yes", "Oui"],
    ["yn", "no", "No", "Non"],
    ["ecg_findings", "normal", "Normal", "Normal"],
    ["ecg_findings", "afib", "Atrial fibrillation", "Fibrillation auriculaire"],
    ["ecg_findings", "qtc", "Prolonged QTc", "QTc allongé"],
    ["ecg_findings", "other", "Other", "Autre"],
]

SETTINGS = [
    ["form_title", "form_id", "version", "default_language", "namespaces"],
    ["Vital signs", "vital_signs", "v1.0", "English (en)",
     'oc="http://openclinica.org/xforms" , OpenClinica="http://openclinica.com/odm"'],
]


def main() -> None:
    wb = Workbook()
    for title, rows in (("survey", SURVEY), ("choices", CHOICES), ("settings", SETTINGS)):
        ws = wb.active if title == "survey" else wb.create_sheet(title)
        ws.title = title
        for row in rows:
            ws.append(row)
    wb.save(Path(__file__).with_name("vital_signs.xlsx"))


if __name__ == "__main__":
    main()
