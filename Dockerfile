FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN useradd --create-home aob && chown -R aob /app
USER aob
EXPOSE 8000
# aob/web.py: uvicorn with the bounds every way of starting the web process shares
CMD ["python", "-m", "aob.web", "--host", "0.0.0.0", "--port", "8000"]
