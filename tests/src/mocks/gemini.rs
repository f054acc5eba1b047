//! Mock upstream for the gemini provider (being written).
