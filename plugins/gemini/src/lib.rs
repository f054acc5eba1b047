//! The gemini provider plugin (being written).
